/**
 * The unprivileged account the privilege drop tests switch to: a system user
 * `p11pd-test` with its own primary group and the supplementary group
 * `p11pd-extra`, created on first use with useradd/groupadd (the tests run as
 * root; CI too). Existing accounts are reused.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export const SERVICE_USER = 'p11pd-test';
export const EXTRA_GROUP = 'p11pd-extra';

export interface ServiceUser {
  name: string;
  uid: number;
  gid: number;
  extraGid: number;
}

function getent(db: string, key: string): string[] | null {
  try {
    return execFileSync('getent', [db, key], { encoding: 'utf8' }).trim().split(':');
  } catch {
    return null;
  }
}

export function ensureServiceUser(): ServiceUser {
  if (getent('group', EXTRA_GROUP) === null) execFileSync('groupadd', ['--system', EXTRA_GROUP]);
  if (getent('passwd', SERVICE_USER) === null) {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', '--groups', EXTRA_GROUP, SERVICE_USER]);
  }
  const pw = getent('passwd', SERVICE_USER)!;
  const gr = getent('group', EXTRA_GROUP)!;
  return { name: SERVICE_USER, uid: Number(pw[2]), gid: Number(pw[3]), extraGid: Number(gr[2]) };
}

/** Recursively hands `dir` to `uid:gid` (a SoftHSM2 store the dropped daemon must write). */
export function chownTree(dir: string, uid: number, gid: number): void {
  fs.chownSync(dir, uid, gid);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory()) chownTree(p, uid, gid);
    else fs.chownSync(p, uid, gid);
  }
}

export interface ProcStatus {
  uid: number[];
  gid: number[];
  groups: number[];
  noNewPrivs: number;
}

/** Uid/Gid (real, effective, saved, fs), Groups and NoNewPrivs of a live process, from /proc/<pid>/status. */
export function procStatus(pid: number): ProcStatus {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '';
  const nums = (k: string): number[] => field(k).split(/\s+/).filter((x) => x !== '').map(Number);
  return { uid: nums('Uid'), gid: nums('Gid'), groups: nums('Groups'), noNewPrivs: Number(field('NoNewPrivs')) };
}

/** Pids of the direct children of `pid` (the workers of a primary). */
export function childPids(pid: number): number[] {
  const text = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
  return text.split(/\s+/).filter((x) => x !== '').map(Number);
}
