import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as p from 'pkcs11js';
import { ecKeyPairTemplates, mech } from './attrs';
import { startDaemon } from './daemon';
import type { DaemonOptions, RunningDaemon } from './daemon';
import { faultyModule } from './faulty-module';
import type { FaultyModule } from './faulty-module';
import { P11Client } from './p11-client';
import { createSoftHsm, USER_PIN } from './softhsm';
import type { SoftHsmStore } from './softhsm';
import { readJsonLines } from './json-lines';

// Shared by the helper-*.test.ts files (module helper processes, module_isolation): a daemon whose
// aliases are fault-injection wrappers over SoftHSM2 stores of their own, and process-tree probes.

export const RW = p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION;

/** Pids of the direct children of `pid` (from /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // The process exited while we looked.
    }
  }
  return out;
}

export function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The helper processes (helper-main.js) among the children of `pid`. */
export function helpersOf(pid: number): number[] {
  return childrenOf(pid).filter((c) => cmdline(c).includes('helper-main.js'));
}

/** The worker processes (worker-main.js) among the children of `pid`. */
export function workersOf(pid: number): number[] {
  return childrenOf(pid).filter((c) => cmdline(c).includes('worker-main.js'));
}

/** Polls `cond` until it holds, at most `ms` (an observable state: a process, an answer). */
export async function waitUntil<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface Alias {
  alias: string;
  store: SoftHsmStore;
  faulty: FaultyModule;
}

/** One line of the audit trail. */
export type AuditLine = { event: string; alias?: string; state?: string; pid?: number; restart_in_ms?: number; [k: string]: unknown };

export interface HelperDaemon {
  d: RunningDaemon;
  aliases: Record<string, Alias>;
  /** The audit trail so far. */
  audit(): AuditLine[];
  /** Pid of the helper that last became ready for `alias` (module_helper audit event); waits for one. */
  helperPid(alias: string): Promise<number>;
  /** The process that serves connections: the worker with workers = 1, else the daemon itself. */
  server(): number;
  stop(): Promise<void>;
}

/**
 * A daemon with one faulty-module alias per entry of `isolation` (its own SoftHSM2 store with token
 * "t-ALIAS"); `isolation[alias]` is that alias's module_isolation block, or null for in-worker.
 */
export async function helperDaemon(
  isolation: Record<string, string | null>,
  o: DaemonOptions = {},
  prepareAlias?: (a: Alias) => void,
): Promise<HelperDaemon> {
  const aliases: Record<string, Alias> = {};
  for (const alias of Object.keys(isolation)) {
    const store = createSoftHsm([`t-${alias}`]);
    aliases[alias] = { alias, store, faulty: faultyModule(path.join(store.dir, 'module'), store.conf) };
    prepareAlias?.(aliases[alias]);
  }
  const blocks = Object.entries(isolation)
    .filter(([, b]) => b !== null)
    .map(([a, b]) => `${a} = { ${b} }`)
    .join(' ');
  const auditDir = fs.mkdtempSync(path.join(os.tmpdir(), 'p11pd-helper-audit-'));
  const auditFile = path.join(auditDir, 'audit.log');
  const d = await startDaemon({
    ...o,
    processorExtra: `audit_file = "${auditFile}"; ${o.processorExtra ?? ''}`,
    modules: Object.values(aliases).map((a) => ({ alias: a.alias, path: a.faulty.path })),
    filterExtra: `${blocks ? `module_isolation = { ${blocks} }` : ''}\n${o.filterExtra ?? ''}`,
  });
  const audit = (): AuditLine[] =>
    readJsonLines<AuditLine>(auditFile);
  return {
    d,
    aliases,
    audit,
    helperPid: (alias) =>
      waitUntil(`a ready helper for ${alias}`, () => {
        const ready = audit().filter((e) => e.event === 'module_helper' && e.alias === alias && e.state === 'ready');
        const pid = ready[ready.length - 1]?.pid;
        return pid !== undefined && alive(pid) ? pid : undefined;
      }),
    server: () => ((o.workers ?? 0) > 0 ? workersOf(d.proc.pid!)[0] : d.proc.pid!),
    async stop() {
      for (const a of Object.values(aliases)) a.faulty.heal();
      await d.stop();
      for (const a of Object.values(aliases)) a.store.cleanup();
      fs.rmSync(auditDir, { recursive: true, force: true });
    },
  };
}

export interface Session {
  c: P11Client;
  s: number;
  slot: number;
}

/** A connection on `alias` with a R/W session on its first token, optionally logged in. */
export async function openSession(d: RunningDaemon, alias: string, login = false): Promise<Session> {
  const c = await P11Client.open({ path: d.socketPath }, alias);
  const slots = await c.call('C_GetSlotList', { tokenPresent: 1, count: 4 });
  if (slots.rv !== p.CKR_OK) throw new Error(`C_GetSlotList -> ${slots.rv}`);
  const r = await c.call('C_OpenSession', { slotID: slots.slotList[0], flags: RW });
  if (r.rv !== p.CKR_OK) throw new Error(`C_OpenSession -> ${r.rv}`);
  if (login) {
    const rv = await c.call('C_Login', { session: r.session, userType: p.CKU_USER, pin: Buffer.from(USER_PIN) });
    if (rv !== p.CKR_OK) throw new Error(`C_Login -> ${rv}`);
  }
  return { c, s: r.session, slot: slots.slotList[0] };
}

/** Opens a session on `alias` as soon as its helper serves again (after a restart). */
export async function openWhenServed(d: RunningDaemon, alias: string, login = false, ms = 15_000): Promise<Session> {
  return waitUntil(`alias ${alias} served`, async () => {
    try {
      return await openSession(d, alias, login);
    } catch {
      return undefined;
    }
  }, ms);
}

/** An ECDSA P-256 key pair in the session: the private key handle. */
export async function ecKey(x: Session, label = 'k'): Promise<number> {
  const kp = await x.c.call('C_GenerateKeyPair', { session: x.s, mechanism: mech(p.CKM_EC_KEY_PAIR_GEN), ...ecKeyPairTemplates(label) });
  if (kp.rv !== p.CKR_OK) throw new Error(`C_GenerateKeyPair -> ${kp.rv}`);
  return kp.privateKey;
}

/** C_SignInit + C_Sign (ECDSA, 32 bytes): the CK_RV of C_Sign. */
export async function sign(x: Session, key: number): Promise<number> {
  const init = await x.c.call('C_SignInit', { session: x.s, mechanism: mech(p.CKM_ECDSA), key });
  if (init !== p.CKR_OK) return init;
  return (await x.c.call('C_Sign', { session: x.s, data: Buffer.alloc(32, 7) })).rv;
}
