/**
 * The daemonize hook: after the sockets are bound and the modules loaded,
 * each process (the primary, every worker) sets its umask and
 * PR_SET_NO_NEW_PRIVS and gives up root for `service.user`/`group`, with the
 * user's supplementary groups. Order: initgroups, setgid, setuid (after
 * setuid the others are no longer permitted). Fail closed: a drop that
 * cannot be completed, or root kept without `processor.allow_root`, stops
 * the process before it serves.
 *
 * A worker respawned later is forked by the primary after its drop and
 * already runs as the target: it checks that instead of switching.
 */
import { ProxyError } from '../../errors';
import { execFileSync } from 'node:child_process';
import { audit } from '../audit';
import type { Logger } from '../log';
import { privilegeAddon } from './native-privilege';

export interface PrivilegeSettings {
  /** service.user: name or uid; null keeps the current user. */
  user: string | null;
  /** service.group: name or gid; null: the user's primary group. */
  group: string | null;
  /** processor.allow_root (or the embedded default, or PKCS11PROXYD_ALLOW_ROOT=1). */
  allowRoot: boolean;
  /** processor.umask; null keeps the inherited one. */
  umask: number | null;
}

const ROOT_REFUSED =
  'running as root without service.user: set `user` (and `group`) in the service block, or `allow_root = true` in processor to keep root';

export class PrivilegeError extends ProxyError {
  readonly code = 'PRIVILEGE';
}

export interface DropTarget {
  user: string;
  uid: number;
  gid: number;
}

/** A `getent` line split on ':', or null when NSS does not know the key. */
function getent(db: 'passwd' | 'group', key: string): string[] | null {
  try {
    const out = execFileSync('getent', [db, key], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    const fields = out.split('\n')[0].split(':');
    return fields.length > 3 ? fields : null;
  } catch {
    return null;
  }
}

/** The uid, primary gid and name the drop switches to (NSS: files, LDAP, ...). */
export function resolveTarget(p: PrivilegeSettings): DropTarget | null {
  if (p.user === null) return null;
  const pw = getent('passwd', p.user);
  if (pw === null) throw new PrivilegeError(`service.user '${p.user}': no such user`);
  let gid = Number(pw[3]);
  if (p.group !== null) {
    const gr = getent('group', p.group);
    if (gr === null) throw new PrivilegeError(`service.group '${p.group}': no such group`);
    gid = Number(gr[2]);
  }
  return { user: pw[0], uid: Number(pw[2]), gid };
}

/** Uid, gid, groups and NoNewPrivs of this process, as the kernel reports them. */
function current(): { uid: number; euid: number; gid: number; egid: number; groups: number[] } {
  return { uid: process.getuid!(), euid: process.geteuid!(), gid: process.getgid!(), egid: process.getegid!(), groups: process.getgroups!() };
}

/**
 * Applies `p` to this process; `role` names it in logs and the audit event
 * ('primary', 'worker 2'). Returns once the process runs as the target, or
 * throws PrivilegeError.
 */
export function dropPrivileges(p: PrivilegeSettings, role: string, log: Logger, target: DropTarget | null = resolveTarget(p)): void {
  if (p.umask !== null) process.umask(p.umask);
  privilegeAddon().setNoNewPrivs();
  const before = current();
  if (target === null) {
    if (before.uid === 0 || before.euid === 0) {
      if (!p.allowRoot) throw new PrivilegeError(ROOT_REFUSED);
      log('warn', `${role}: running as root (allow_root); set service.user to drop privileges`);
    }
    audit({ event: 'privilege_drop', role, outcome: 'kept', uid: before.uid, gid: before.gid, groups: before.groups, no_new_privs: true });
    return;
  }
  if (before.euid === 0) {
    try {
      (process as unknown as { initgroups(user: string, extraGroup: number): void }).initgroups(target.user, target.gid);
      process.setgid!(target.gid);
      process.setuid!(target.uid);
    } catch (e) {
      throw new PrivilegeError(`${role}: cannot drop to ${target.user} (uid ${target.uid}, gid ${target.gid}): ${(e as Error).message}`);
    }
  }
  const after = current();
  const ok =
    after.uid === target.uid && after.euid === target.uid && after.gid === target.gid && after.egid === target.gid && (target.uid === 0 || !after.groups.includes(0));
  if (!ok) {
    throw new PrivilegeError(
      `${role}: runs as uid ${after.uid}/${after.euid} gid ${after.gid}/${after.egid}, not ${target.user} (uid ${target.uid}, gid ${target.gid}); start it as root or as that user`,
    );
  }
  // A drop that could be undone is no drop (uid 0 cannot come back once every uid is the target).
  if (target.uid !== 0) {
    let regained = false;
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // EPERM: as it must be.
    }
    if (regained) throw new PrivilegeError(`${role}: setuid(0) succeeded after the drop`);
  }
  if (before.euid === 0) log('info', `${role}: privileges dropped to ${target.user} (uid ${after.uid}, gid ${after.gid}, groups ${after.groups.join(',')})`);
  audit({ event: 'privilege_drop', role, outcome: before.euid === 0 ? 'dropped' : 'already', user: target.user, uid: after.uid, gid: after.gid, groups: after.groups, no_new_privs: true });
}

/**
 * The start-up check, before anything is bound: the user and group exist,
 * and root without `user` is allowed explicitly. Throws PrivilegeError.
 */
export function checkPrivilegeSettings(p: PrivilegeSettings): DropTarget | null {
  const target = resolveTarget(p);
  if (target === null && (process.getuid!() === 0 || process.geteuid!() === 0) && !p.allowRoot) throw new PrivilegeError(ROOT_REFUSED);
  return target;
}

/** PKCS11PROXYD_ALLOW_ROOT=1: allow_root for every configuration (test harnesses that run as root). */
export function allowRootFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.PKCS11PROXYD_ALLOW_ROOT === '1';
}
