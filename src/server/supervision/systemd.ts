/**
 * The service manager's side of the daemon (sd_notify(3), sd_listen_fds(3)
 * protocols, implemented here without libsystemd):
 *  - readiness: `READY=1` (then `STOPPING=1` at shutdown) as one datagram to
 *    the AF_UNIX socket named by NOTIFY_SOCKET;
 *  - socket activation: LISTEN_PID = our pid and LISTEN_FDS = n hand us
 *    listening sockets on descriptors 3 .. 3+n-1 (LISTEN_FDNAMES names them,
 *    colon separated), used instead of binding the configured addresses.
 * Both variables are removed from the environment once read, so the workers
 * (and anything they start) do not act on them.
 */
import { ProxyError } from '../../errors';
import type { Logger } from '../log';
import type { ListenAddress } from '../transport/types';
import { privilegeAddon } from './native-privilege';

/** First descriptor passed by the manager (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export class ActivationError extends ProxyError {
  readonly code = 'ACTIVATION';
}

export interface ServiceManager {
  /** Sends `READY=1` (with a status line); no-op without NOTIFY_SOCKET. */
  ready(status: string): void;
  /** Sends `STOPPING=1`; no-op without NOTIFY_SOCKET. */
  stopping(): void;
}

/** Reads and removes NOTIFY_SOCKET; a send failure is logged, never fatal (the manager times out on its own). */
export function serviceManager(log: Logger, env: NodeJS.ProcessEnv = process.env): ServiceManager {
  const socket = env.NOTIFY_SOCKET;
  delete env.NOTIFY_SOCKET;
  const send = (text: string): void => {
    if (socket === undefined || socket === '') return;
    try {
      privilegeAddon().notify(socket, text);
    } catch (e) {
      log('warn', `NOTIFY_SOCKET ${socket}: ${(e as Error).message}`);
    }
  };
  return {
    ready: (status) => send(`READY=1\nMAINPID=${process.pid}\nSTATUS=${status.replace(/\n/g, ' ')}\n`),
    stopping: () => send('STOPPING=1\n'),
  };
}

/**
 * The listening sockets the manager passed, as listen addresses (each with
 * its descriptor), or null when this process was not socket activated.
 * Socket keys (tcp_nodelay, keepalive) come from the configured address with
 * the same path or port, if any. Throws ActivationError for a descriptor that
 * is not a listening stream socket.
 */
export function activatedListeners(configured: readonly ListenAddress[], env: NodeJS.ProcessEnv = process.env): ListenAddress[] | null {
  const pid = env.LISTEN_PID;
  const count = env.LISTEN_FDS;
  const names = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (count === undefined || pid === undefined || Number(pid) !== process.pid) return null;
  if (!/^[0-9]+$/.test(count) || Number(count) < 1 || Number(count) > 64) throw new ActivationError(`LISTEN_FDS='${count}': not a count of 1 to 64`);
  const fdNames = names?.split(':') ?? [];
  const out: ListenAddress[] = [];
  for (let i = 0; i < Number(count); i++) {
    const fd = LISTEN_FDS_START + i;
    let s;
    try {
      s = privilegeAddon().listenSocket(fd);
    } catch (e) {
      throw new ActivationError(`LISTEN_FDS: descriptor ${fd}${fdNames[i] ? ` (${fdNames[i]})` : ''}: ${(e as Error).message}`);
    }
    if (s.family === 'unix') {
      const like = configured.find((a) => a.type === 'local' && a.path === s.path);
      out.push({ ...(like ?? {}), type: 'local', path: s.path, inheritedFd: fd });
    } else {
      const like = configured.find((a) => a.type === 'internet' && a.port === s.port);
      out.push({ ...(like ?? {}), type: 'internet', host: s.host, port: s.port, inheritedFd: fd });
    }
  }
  return out;
}
