/**
 * The native/unixdgram addon (built by `npm run build:native`): AF_UNIX
 * datagram sockets, which node:dgram does not offer, for the audit trail's
 * syslog sink (/dev/log).
 */
import fs from 'node:fs';
import { addonFile } from '../native-addons';

export interface UnixDgramAddon {
  /** An unbound SOCK_DGRAM socket whose blocking sends give up after timeoutMs (SO_SNDTIMEO). */
  open(timeoutMs: number): number;
  /** One datagram to the socket at `path`; bytes sent, or -errno (wait false: MSG_DONTWAIT). */
  send(fd: number, path: string, data: Buffer, wait: boolean): number;
  close(fd: number): void;
}

let addon: UnixDgramAddon | null = null;

export function unixDgramAddon(): UnixDgramAddon {
  if (addon) return addon;
  const file = addonFile('unixdgram');
  if (!fs.existsSync(file)) throw new Error(`the unixdgram addon ${file} is missing: run 'npm run build' (it needs node-gyp and a C compiler)`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  addon = require(file) as UnixDgramAddon;
  return addon;
}
