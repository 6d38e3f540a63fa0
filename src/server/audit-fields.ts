import { describeIdentity } from '../filter/identity';
import type { ConnectionState } from './dispatch/connection-state';

/** Who an event is about: the connection (its number in this process) and its transport identity. Public values only. */
export function connectionFields(conn: ConnectionState): { conn: number; identity: string; peer: string; alias: string | null } {
  return { conn: conn.id, identity: describeIdentity(conn.identity), peer: conn.peer, alias: conn.app.moduleAlias };
}
