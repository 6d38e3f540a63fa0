/**
 * The native/privilege addon (built by `npm run build:native`): prctl
 * PR_SET_NO_NEW_PRIVS, the sd_notify datagram and the check of inherited
 * listening sockets. Node exposes none of them.
 */
import fs from 'node:fs';
import { addonFile } from '../../native-addons';

export type InheritedSocket = { family: 'unix'; path: string } | { family: 'inet'; host: string; port: number };

export interface PrivilegeAddon {
  setNoNewPrivs(): number;
  getNoNewPrivs(): number;
  /** prctl(PR_SET_PDEATHSIG, SIGKILL); returns getppid() after it. Cleared by a credential change. */
  killWithParent(): number;
  /** One datagram to the AF_UNIX socket `path` ('@' first: abstract namespace); bytes sent. */
  notify(path: string, text: string): number;
  /** Throws unless `fd` is a listening stream socket; sets FD_CLOEXEC. */
  listenSocket(fd: number): InheritedSocket;
}

let addon: PrivilegeAddon | null = null;

export function privilegeAddon(): PrivilegeAddon {
  if (addon) return addon;
  const file = addonFile('privilege');
  if (!fs.existsSync(file)) throw new Error(`the privilege addon ${file} is missing: run 'npm run build' (it needs node-gyp and a C compiler)`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  addon = require(file) as PrivilegeAddon;
  return addon;
}
