/** Unix-domain socket files: stale-file removal before bind, ownership and mode after. */
import { execFile } from 'child_process';
import { promises as fs } from 'fs';
import net from 'net';
import {
  getErrorCode,
  RpcAddressInUseError,
  RpcListenError,
  RpcSocketPathError,
  RpcUnknownPrincipalError,
} from './errors';

/**
 * Make `path` free for bind(): absent is fine; a socket nobody answers on (ECONNREFUSED) is a
 * leftover of a dead server and is removed; a live socket or any other file type is an error.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch (e) {
    if (getErrorCode(e) === 'ENOENT') return;
    throw new RpcListenError(path, e);
  }
  if (!st.isSocket()) throw new RpcSocketPathError(path);
  const probe = await probeSocket(path);
  if (probe === 'live') throw new RpcAddressInUseError(path);
  if (probe !== 'stale') throw new RpcListenError(path, probe);
  try {
    await fs.unlink(path);
  } catch (e) {
    if (getErrorCode(e) !== 'ENOENT') throw new RpcListenError(path, e);
  }
}

function probeSocket(path: string): Promise<'live' | 'stale' | Error> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve('live');
    });
    s.once('error', (e) => {
      s.destroy();
      const code = getErrorCode(e);
      resolve(code === 'ECONNREFUSED' || code === 'ENOENT' ? 'stale' : e);
    });
  });
}

/** Apply owner/group (names or ids) then mode. Between bind and this call the file has umask permissions. */
export async function applySocketPermissions(
  path: string,
  opts: { mode?: number; owner?: string | number; group?: string | number },
): Promise<void> {
  if (opts.owner !== undefined || opts.group !== undefined) {
    const uid = opts.owner === undefined ? -1 : await resolveId('user', opts.owner);
    const gid = opts.group === undefined ? -1 : await resolveId('group', opts.group);
    await fs.chown(path, uid, gid);
  }
  if (opts.mode !== undefined) await fs.chmod(path, opts.mode);
}

/** A numeric id, or a name looked up through NSS (`getent passwd|group`). */
export async function resolveId(kind: 'user' | 'group', who: string | number): Promise<number> {
  if (typeof who === 'number') return who;
  if (/^[0-9]+$/.test(who)) return Number(who);
  const db = kind === 'user' ? 'passwd' : 'group';
  const line = await new Promise<string | null>((resolve) => {
    execFile('getent', [db, who], { timeout: 10_000 }, (err, stdout) => resolve(err ? null : stdout));
  });
  // passwd: name:pw:uid:...  group: name:pw:gid:...
  const fields = line?.split('\n')[0].split(':');
  const id = fields && fields.length > 2 ? Number(fields[2]) : NaN;
  if (!Number.isInteger(id) || id < 0) throw new RpcUnknownPrincipalError(kind, who);
  return id;
}
