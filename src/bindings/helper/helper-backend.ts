/**
 * A module in a helper process (module_isolation mode "helper"). The worker
 * keeps this object as the alias's Backend; the module's code runs in a
 * child process (helper-main.ts) that this object starts, talks to over a
 * socketpair (protocol.ts) and restarts.
 *
 * Faults and what the layers above see:
 *  - The helper dies (the module segfaults or aborts, or it is killed): every
 *    call in flight answers CKR_DEVICE_ERROR, and so does every call until a
 *    new helper is started, after a backoff delay (Backoff: doubling from
 *    RESTART_BACKOFF.baseMs up to maxMs, with jitter; a helper that stayed up
 *    stableMs starts a new series). The new helper initializes the module
 *    afresh: module sessions and login state are gone.
 *  - The helper cannot load or initialize the module: handled as a death
 *    (retried with backoff). The alias stays loadable (C_LoadModule answers
 *    CKR_OK), its calls answer CKR_DEVICE_ERROR.
 *  - A call is not answered within call_timeout_ms: the helper is taken as
 *    hung, killed with SIGKILL and handled as dead (CKR_DEVICE_ERROR).
 *  - Handles: this backend answers the module's session and object numbers
 *    tagged with the helper's generation (generation * 2^32 + module handle),
 *    so a number of a dead helper never names anything in its successor:
 *    sessions of a dead helper answer CKR_SESSION_HANDLE_INVALID, objects
 *    CKR_OBJECT_HANDLE_INVALID (or the call's own *_HANDLE_INVALID). A module
 *    handle of 2^32 or more cannot be tagged: the call answers
 *    CKR_DEVICE_ERROR (helper mode needs 32-bit handles; SoftHSM2 and common
 *    modules use small numbers).
 *  - Login: a death is announced with moduleReset(alias), and the login
 *    layer forgets the token's login (the module is logged out): clients log
 *    in again.
 * Calls never wait for a restart, and nothing is replayed here (pools do that
 * on another member). The worker, its other aliases and its connections are
 * not affected. Helpers die with their worker: the channel's end makes them
 * exit, and PR_SET_PDEATHSIG kills one whose worker died while a module call
 * blocked it. One helper per alias and worker (module_isolation processes =
 * 1): PKCS#11 login state is per process, so sessions of one application in
 * several helpers would each need their own C_Login.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { callFieldsOf, px_rvCodec, xdrDecode, xdrEncodeFramed } from '../../generated/pkcs11_rpc';
import type { C_GenerateRandom_args, CallFields, CallName, MaybePromise, px_bytes_ret, ProcedureDef } from '../../generated/pkcs11_rpc';
import { ck, CKR_ARGUMENTS_BAD, CKR_DEVICE_ERROR, CKR_SESSION_HANDLE_INVALID } from '../../pkcs11/constants';
import { Pkcs11Error } from '../../pkcs11/errors';
import { packageRoot } from '../../native-addons';
import { audit } from '../../server/audit';
import type { Logger } from '../../server/log';
import { Backoff, DEFAULT_BACKOFF } from '../../server/supervision/backoff';
import type { BackoffOptions } from '../../server/supervision/backoff';
import { auditCallLimit } from '../../server/transport/limits';
import { BackendBase, moduleReset } from '../backend';
import type { Backend, BackendContext, BackendLimits } from '../backend';
import type { ModuleIsolation } from './isolation';
import { CONTROL_ID, FrameReader, HEADER_SIZE, HELPER_CALL_INDEX, MAX_FRAME, HELPER_CALLS, HELPER_ENV, STATUS_FAILED, STATUS_RV, STATUS_VALUE, writeHeader } from './protocol';
import type { HelperStartup } from './protocol';

/** Restart delays of a helper that keeps dying. */
export const RESTART_BACKOFF: BackoffOptions = { ...DEFAULT_BACKOFF, baseMs: 100 };

const TAG = 2 ** 32;
/** Generations wrap before generation * 2^32 + handle leaves the safe integers. */
const GENERATIONS = 2 ** 20;

/** What the worker passes on to its helpers. */
export interface HelperEnvironment {
  readonly log?: Logger;
  readonly privilege?: HelperStartup['privilege'];
  readonly logLevel?: HelperStartup['logLevel'];
  readonly logFormat?: HelperStartup['logFormat'];
  readonly workerIndex?: number;
  readonly plainParameterMechanisms?: readonly number[];
}

export type HelperState = 'starting' | 'ready' | 'down' | 'closed';

interface Pending {
  readonly def: ProcedureDef;
  readonly fields: CallFields<unknown, unknown>;
  readonly generation: number;
  readonly deadline: number;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/** The compiled helper entry point: next to this file when running from dist/, else dist/'s copy (ts-jest). */
function helperMain(): string {
  const here = path.join(__dirname, 'helper-main.js');
  return fs.existsSync(here) ? here : path.join(packageRoot(), 'dist', 'src', 'bindings', 'helper', 'helper-main.js');
}

const EMPTY = Buffer.alloc(0);

/** Variables of the daemon's processes a helper has no use for (settings, service manager hand-offs). */
const HELPER_ENV_DROPPED = ['PKCS11PROXYD_SETTINGS', 'PKCS11PROXYD_WORKER_INDEX', 'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'NOTIFY_SOCKET'];

/** Longest wait at finalize() for the helper to finalize its module. */
const FINALIZE_WAIT_MS = 2000;

/** Whether `pid` still runs (a zombie, exited but not yet reaped by us, does not). */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Every call of Pkcs11Calls not defined below is installed on the instance by
 * the constructor (sent to the helper as it is): the layers see it through
 * asBackend().
 */
export class HelperBackend extends BackendBase {
  readonly alias: string;
  private state: HelperState = 'starting';
  private child: ChildProcess | null = null;
  private channel: net.Socket | null = null;
  private generation = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private sweep: NodeJS.Timeout | null = null;
  private restart: NodeJS.Timeout | null = null;
  private readonly backoff = new Backoff(RESTART_BACKOFF);
  private readyAt = 0;
  private readonly log: Logger;

  constructor(
    private readonly spec: { readonly alias: string; readonly path: string },
    private readonly isolation: ModuleIsolation,
    private readonly limits: BackendLimits,
    private readonly env: HelperEnvironment = {},
  ) {
    super();
    this.alias = spec.alias;
    this.log = env.log ?? (() => undefined);
    for (const def of HELPER_CALLS) {
      // Defined here or inherited from BackendBase: answered in this process.
      if (def.name in HelperBackend.prototype) continue;
      const name = def.name;
      Object.defineProperty(this, name, {
        value: (ctx: BackendContext, args: unknown) => this.call(name, ctx, args),
        enumerable: false,
        writable: false,
      });
    }
    this.start();
  }

  /** The helper's pid (null while none runs), its state and generation: for logs and tests. */
  get status(): { pid: number | null; state: HelperState; generation: number } {
    return { pid: this.child?.pid ?? null, state: this.state, generation: this.generation };
  }

  private start(): void {
    this.restart = null;
    this.generation = (this.generation % (GENERATIONS - 1)) + 1;
    this.state = 'starting';
    const startup: HelperStartup = {
      alias: this.spec.alias,
      path: this.spec.path,
      limits: this.limits,
      privilege: this.env.privilege ?? null,
      logLevel: this.env.logLevel ?? 'info',
      logFormat: this.env.logFormat ?? 'text',
      workerIndex: this.env.workerIndex ?? null,
      parentPid: process.pid,
      plainParameterMechanisms: this.env.plainParameterMechanisms ?? [],
    };
    const env: NodeJS.ProcessEnv = { ...process.env, [HELPER_ENV]: JSON.stringify(startup) };
    // The module sees the worker's environment (SOFTHSM2_CONF, vendor settings), not the daemon's own hand-offs.
    for (const k of HELPER_ENV_DROPPED) delete env[k];
    const child = spawn(process.execPath, [helperMain()], {
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    });
    const channel = child.stdio[3] as net.Socket;
    this.child = child;
    this.channel = channel;
    const reader = new FrameReader((id, status, _w, payload) => this.answered(child, id, status, payload));
    channel.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        this.lost(child, `protocol error: ${(e as Error).message}`);
      }
    });
    channel.on('error', () => this.lost(child, 'channel error'));
    channel.on('close', () => this.lost(child, 'channel closed'));
    child.on('error', (e) => {
      this.lost(child, `cannot run: ${e.message}`);
      // A process that never started has no exit event: its restart is scheduled here.
      if (child.pid === undefined) this.exited(child, null, null);
    });
    child.on('exit', (code, signal) => this.exited(child, code, signal));
    this.log('debug', `helper for '${this.alias}' started (pid ${child.pid}, generation ${this.generation})`);
  }

  /** A reply, or the helper's own frame. */
  private answered(child: ChildProcess, id: number, status: number, payload: Buffer): void {
    if (child !== this.child) return;
    if (id === CONTROL_ID) {
      if (status === STATUS_VALUE) {
        this.state = 'ready';
        this.readyAt = Date.now();
        this.log('info', `helper for '${this.alias}' ready (pid ${child.pid}, generation ${this.generation})`);
        audit({ event: 'module_helper', alias: this.alias, state: 'ready', pid: child.pid, generation: this.generation });
      } else {
        this.lost(child, `cannot open the module: ${payload.toString('utf8')}`);
      }
      return;
    }
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    if (status === STATUS_VALUE) {
      let r: unknown;
      try {
        r = this.tagResult(p, xdrDecode(p.def.ret, payload));
      } catch (e) {
        p.reject(e);
        return;
      }
      p.resolve(r);
    } else if (status === STATUS_RV) p.reject(new Pkcs11Error(xdrDecode(px_rvCodec, payload), p.def.name));
    else if (status === STATUS_FAILED) p.reject(new Error(`helper for '${this.alias}': ${payload.toString('utf8')}`));
    else this.lost(child, `protocol error: status ${status}`);
  }

  /**
   * The helper is gone or unusable: calls in flight answer CKR_DEVICE_ERROR,
   * the process is killed if it still runs, and its exit schedules the restart.
   */
  private lost(child: ChildProcess, reason: string): void {
    if (child !== this.child || this.state === 'down' || this.state === 'closed') return;
    this.state = 'down';
    this.failPending();
    moduleReset(this.alias);
    this.log('error', `helper for '${this.alias}' (pid ${child.pid}) lost: ${reason}; its calls in flight answer CKR_DEVICE_ERROR, its sessions are gone`);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    const how = signal ?? `exit ${code}`;
    this.lost(child, `exited (${how})`);
    this.child = null;
    this.channel = null;
    if (this.state === 'closed') return;
    const uptime = this.readyAt > 0 ? Date.now() - this.readyAt : 0;
    this.readyAt = 0;
    const delay = this.backoff.died(uptime);
    this.log('error', `helper for '${this.alias}' exited (${how}); restarting in ${delay} ms (death ${this.backoff.count} in a row)`);
    audit({ event: 'module_helper', alias: this.alias, state: 'exited', pid: child.pid, signal: signal ?? null, code, restart_in_ms: delay });
    this.restart = setTimeout(() => this.start(), delay);
    this.restart.unref();
  }

  private failPending(): void {
    if (this.sweep !== null) clearTimeout(this.sweep);
    this.sweep = null;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.resolve(p.def.errorRet(CKR_DEVICE_ERROR));
  }

  /** Arms the timeout check for the oldest call in flight (calls are kept in sending order). */
  private armSweep(): void {
    if (this.sweep !== null) return;
    const oldest = this.pending.values().next();
    if (oldest.done === true) return;
    this.sweep = setTimeout(() => this.swept(), Math.max(1, oldest.value.deadline - Date.now()));
    this.sweep.unref();
  }

  private swept(): void {
    this.sweep = null;
    const oldest = this.pending.values().next();
    if (oldest.done === true) return;
    if (oldest.value.deadline <= Date.now() && this.child !== null) {
      this.lost(this.child, `${oldest.value.def.name} not answered within call_timeout_ms (${this.isolation.callTimeoutMs} ms): hung, killed`);
      return;
    }
    this.armSweep();
  }

  /** A module handle as this backend answers it. */
  private tag(h: number): number {
    if (h === 0) return 0;
    if (!(h > 0 && h < TAG)) throw new Pkcs11Error(CKR_DEVICE_ERROR);
    return this.generation * TAG + h;
  }

  /** The module handle of a tagged one, or `invalid` thrown when another generation (or nobody) gave it. */
  private untag(v: number, invalid: number): number {
    const h = v % TAG;
    if ((v - h) / TAG !== this.generation || h === 0) throw new Pkcs11Error(invalid);
    return h;
  }

  private untagArgs(fields: CallFields<unknown, unknown>, args: unknown): unknown {
    const f = fields.args;
    if (f.session.length === 0 && f.sessionList.length === 0 && f.object.length === 0 && f.objectList.length === 0) return args;
    const a = fields.copyArgs(args);
    for (const s of f.session) s.set(a, this.untag(s.get(a), CKR_SESSION_HANDLE_INVALID));
    for (const s of f.sessionList) s.set(a, s.get(a).map((v) => this.untag(v, CKR_SESSION_HANDLE_INVALID)));
    for (const o of f.object) {
      const v = o.get(a);
      if (v === 0 && o.zeroAllowed) continue;
      o.set(a, this.untag(v, o.invalidRv));
    }
    for (const o of f.objectList) o.set(a, o.get(a).map((v) => this.untag(v, o.invalidRv)));
    return a;
  }

  /** Tags the handles of a decoded result (ours: decoded values are fresh objects). */
  private tagResult(p: Pending, r: unknown): unknown {
    const f = p.fields.result;
    if (r === null || typeof r !== 'object') return r;
    if (p.generation !== this.generation) throw new Pkcs11Error(CKR_DEVICE_ERROR, p.def.name);
    try {
      for (const s of f.session) s.set(r, this.tag(s.get(r)));
      for (const s of f.sessionList) s.set(r, s.get(r).map((v) => this.tag(v)));
      for (const o of f.object) o.set(r, this.tag(o.get(r)));
      for (const o of f.objectList) o.set(r, o.get(r).map((v) => this.tag(v)));
    } catch (e) {
      this.log('error', `helper for '${this.alias}': ${p.def.name} answered a handle of 2^32 or more, which helper mode cannot carry`);
      throw e;
    }
    return r;
  }

  /** Sends one call to the helper; the answer comes back as a promise. */
  private call(name: CallName, ctx: BackendContext, args: unknown): Promise<unknown> {
    const index = HELPER_CALL_INDEX.get(name)!;
    const def = HELPER_CALLS[index];
    // Failures of this backend's own (helper down, a handle of a dead helper) answer in band, as a result
    // with that CK_RV: the layers above then drop what the call ends (a closed session) as for any refusal.
    if (this.state === 'down' || this.state === 'closed' || this.channel === null) return Promise.resolve(def.errorRet(CKR_DEVICE_ERROR));
    const fields = callFieldsOf(name);
    let frame: Buffer;
    try {
      frame = xdrEncodeFramed(def.args, this.untagArgs(fields, args), HEADER_SIZE);
    } catch (e) {
      return e instanceof Pkcs11Error ? Promise.resolve(def.errorRet(e.rv)) : Promise.reject(e);
    }
    // Larger than the helper reads (a max_record_size beyond it): refused here, the helper is not at fault.
    if (frame.length - 4 > MAX_FRAME) return Promise.resolve(def.errorRet(ck.CKR_HOST_MEMORY));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    writeHeader(frame, id, index, ctx.appId);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { def, fields, generation: this.generation, deadline: Date.now() + this.isolation.callTimeoutMs, resolve, reject });
      this.armSweep();
      this.channel!.write(frame);
    });
  }

  /** The length cap is checked (and audited) in the worker, where the audit sink is. */
  C_GenerateRandom(c: BackendContext, a: C_GenerateRandom_args): MaybePromise<px_bytes_ret> {
    if (a.length < 0 || a.length > this.limits.maxRandomLength) {
      auditCallLimit('max_random_length', 'C_GenerateRandom', 'CKR_ARGUMENTS_BAD', { app: c.appId, alias: c.alias });
      return { rv: CKR_ARGUMENTS_BAD, data: EMPTY };
    }
    return this.call('C_GenerateRandom', c, a) as Promise<px_bytes_ret>;
  }

  /** This backend through the common interface (its generic calls are installed per instance). */
  asBackend(): Backend {
    return this as unknown as Backend;
  }

  /**
   * Stops the helper, no restart: SIGTERM makes it C_Finalize the module and
   * exit. Waits for that (at most FINALIZE_WAIT_MS, synchronously: the worker
   * exits right after, and its death would kill the helper before the module
   * is finalized); a helper still running then dies with the worker.
   */
  finalize(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.restart !== null) clearTimeout(this.restart);
    this.restart = null;
    this.failPending();
    const pid = this.child?.pid;
    if (pid === undefined || this.child?.exitCode !== null || this.child?.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const deadline = Date.now() + FINALIZE_WAIT_MS;
    const pause = new Int32Array(new SharedArrayBuffer(4));
    while (running(pid) && Date.now() < deadline) Atomics.wait(pause, 0, 0, 5);
  }
}
