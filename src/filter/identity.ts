/**
 * Who the client is, as far as the policy is concerned: what the transport
 * established (never what the client claims, such as AUTH_SYS). profile_map
 * entries (filter.conf) match against it to pick a policy profile.
 */
import type { IdentityPattern, ProfileMapEntry } from '../config/filter-config';
import type { ConnectionInfo, PeerCertificate } from '../server/transport/types';
import type { AliasPolicy, CompiledFilter } from './policy';

export type ClientIdentity =
  /** Local socket: SO_PEERCRED of the connecting process (real uid, primary gid), at connect(2) time. */
  | { readonly kind: 'unix'; readonly uid: number; readonly gid: number; readonly pid: number }
  | { readonly kind: 'tcp'; readonly address: string }
  /** TLS: the verified client certificate, absent when none was required and none was sent. */
  | { readonly kind: 'tls'; readonly address: string; readonly certificate?: PeerCertificate }
  /** In-process callers (tests, benchmarks) and connections whose peer could not be read: only `*` matches. */
  | { readonly kind: 'unknown' };

export const UNKNOWN_IDENTITY: ClientIdentity = Object.freeze({ kind: 'unknown' });

export function identityOf(info: ConnectionInfo): ClientIdentity {
  const p = info.peer;
  if (p === undefined) return UNKNOWN_IDENTITY;
  if (p.transport === 'unix') return Object.freeze({ kind: 'unix', uid: p.uid, gid: p.gid, pid: p.pid });
  if (p.transport === 'tls') return Object.freeze({ kind: 'tls', address: `${p.address}:${p.port}`, certificate: p.certificate });
  return Object.freeze({ kind: 'tcp', address: `${p.address}:${p.port}` });
}

/** For logs. */
export function describeIdentity(id: ClientIdentity): string {
  switch (id.kind) {
    case 'unix':
      return `uid ${id.uid} gid ${id.gid} pid ${id.pid}`;
    case 'tcp':
      return `tcp ${id.address}`;
    case 'tls':
      return id.certificate ? `tls ${id.address} subject ${JSON.stringify(id.certificate.subject)} sha256 ${id.certificate.sha256.slice(0, 16)}` : `tls ${id.address} (no certificate)`;
    default:
      return 'unknown peer';
  }
}

/** As written in profile_map. */
export function describeIdentityPattern(p: IdentityPattern): string {
  switch (p.kind) {
    case 'uid':
      return `uid:${p.uid}`;
    case 'gid':
      return `gid:${p.gid}`;
    case 'transport':
      return p.transport;
    case 'any':
      return '*';
  }
}

export function identityMatches(p: IdentityPattern, id: ClientIdentity): boolean {
  switch (p.kind) {
    case 'uid':
      return id.kind === 'unix' && id.uid === p.uid;
    case 'gid':
      return id.kind === 'unix' && id.gid === p.gid;
    case 'transport':
      return id.kind === p.transport;
    case 'any':
      return true;
  }
}

/** The profile of the first matching entry, 'default' when none matches. */
export function profileOf(map: readonly ProfileMapEntry[], id: ClientIdentity): string {
  for (const e of map) if (identityMatches(e.identity, id)) return e.profile;
  return 'default';
}

/** The policy for this client and module alias: its profile's (profile_map), else the default profile's. */
export function policyFor(filter: CompiledFilter, id: ClientIdentity, alias: string): AliasPolicy | undefined {
  if (filter.profiles === undefined || filter.profileMap === undefined || filter.profileMap.length === 0) return filter.byAlias.get(alias);
  return (filter.profiles.get(profileOf(filter.profileMap, id)) ?? filter.byAlias).get(alias);
}
