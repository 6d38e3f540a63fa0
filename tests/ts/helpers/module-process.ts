import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './daemon';

/** Our C client library, as an application loads it. */
export const OUR_CLIENT = path.join(ROOT, 'client', 'build', 'libp11client.so');

/**
 * The child: loads one PKCS#11 module with pkcs11js and runs the pkcs11js
 * method each message names. A module reads its settings (SOFTHSM2_CONF,
 * PKCS11PROXY_SOCKET_PATH, ...) with getenv(), which jest's sandboxed
 * process.env never reaches, hence a process of its own. Buffers cross the
 * IPC channel as Uint8Arrays and are turned back into Buffers on both sides.
 * Anything but a PKCS#11 error (a wrong argument type) rejects the call.
 */
const CHILD = `
const p = require(process.env.PKCS11JS);
const m = new p.PKCS11();
m.load(process.env.MODULE);
const revive = (v) => v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  : Array.isArray(v) ? v.map(revive)
  : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)])) : v;
process.on('message', ({ id, fn, args }) => {
  try {
    const ok = m[fn](...revive(args));
    process.send({ id, ok: ok === undefined ? null : ok });
  } catch (e) {
    // pkcs11js gives the CK_RV as e.code, or only in the message ("CKR_X:16") for some calls.
    const m = /^CKR_\\w+:(\\d+)$/.exec(String(e && e.message));
    process.send({ id, rv: typeof e.code === 'number' ? e.code : m ? Number(m[1]) : -1, message: String(e && e.message) });
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ id: 0, ok: 'ready' });
`;

/** One call's answer: the pkcs11js return value, or the CK_RV the module answered. */
export type Answer<T> = { ok: T; rv: 0 } | { ok: undefined; rv: number };

const revive = (v: unknown): unknown =>
  v instanceof Uint8Array
    ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
    : Array.isArray(v)
      ? v.map(revive)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]))
        : v;

/** A PKCS#11 module (our C client, SoftHSM2, ...) loaded by pkcs11js in a child process with its own environment. */
export class ModuleProcess {
  private next = 1;
  private readonly pending = new Map<number, (m: { ok?: unknown; rv?: number; message?: string }) => void>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { id: number; ok?: unknown; rv?: number; message?: string }) => {
      const done = this.pending.get(m.id);
      this.pending.delete(m.id);
      done?.(m);
    });
    child.once('exit', (code, signal) => {
      for (const done of this.pending.values()) done({ rv: -1, message: `module process exited (${code ?? signal})` });
      this.pending.clear();
    });
  }

  static async start(module: string, env: NodeJS.ProcessEnv): Promise<ModuleProcess> {
    const child = spawn(process.execPath, ['-e', CHILD], {
      env: { ...env, MODULE: module, PKCS11JS: require.resolve('pkcs11js') },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    const mp = new ModuleProcess(child);
    await new Promise<void>((resolve, reject) => {
      mp.pending.set(0, (m) => (m.ok === 'ready' ? resolve() : reject(new Error(m.message))));
    });
    return mp;
  }

  /** Calls pkcs11js's method `fn`; a PKCS#11 error comes back as its CK_RV, anything else throws. */
  call<T = unknown>(fn: string, ...args: unknown[]): Promise<Answer<T>> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (m) => {
        if (m.rv === undefined) resolve({ ok: revive(m.ok) as T, rv: 0 });
        else if (m.rv >= 0) resolve({ ok: undefined, rv: m.rv });
        else reject(new Error(`${fn}: ${m.message}`));
      });
      this.child.send({ id, fn, args });
    });
  }

  /** Like call, but a CK_RV other than CKR_OK throws. */
  async must<T = unknown>(fn: string, ...args: unknown[]): Promise<T> {
    const a = await this.call<T>(fn, ...args);
    if (a.rv !== 0) throw new Error(`${fn} -> CK_RV 0x${a.rv.toString(16)}`);
    return a.ok as T;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.disconnect();
    await exited;
  }
}
