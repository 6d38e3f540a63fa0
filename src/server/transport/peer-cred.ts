/**
 * SO_PEERCRED of an accepted Unix-domain socket through the small addon in
 * native/peercred (built by `npm run build`). Node has no getsockopt.
 */
import fs from 'fs';
import type net from 'net';
import { addonFile } from '../../native-addons';

export interface UnixPeerCred {
  uid: number;
  gid: number;
  pid: number;
}

interface PeerCredAddon {
  peerCred(fd: number): UnixPeerCred;
}

let addon: PeerCredAddon | null = null;

/** Loads the addon; throws (with the path and the fix) when it was not built. Called before a Unix listener binds. */
export function loadPeerCredAddon(): void {
  if (addon) return;
  const file = addonFile('peercred');
  if (!fs.existsSync(file)) {
    throw new Error(`the SO_PEERCRED addon ${file} is missing: run 'npm run build' (it needs node-gyp and a C compiler)`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  addon = require(file) as PeerCredAddon;
}

/** The kernel's record of who connected `sock`, or null if the descriptor is not reachable (already closed). */
export function unixPeerCred(sock: net.Socket): UnixPeerCred | null {
  loadPeerCredAddon();
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return null;
  try {
    return addon!.peerCred(fd);
  } catch {
    return null;
  }
}
