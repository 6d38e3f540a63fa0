/**
 * Who the client is, as far as the policy is concerned: what the transport
 * established (never what the client claims, such as AUTH_SYS). profile_map
 * entries (filter.conf) match against it to pick a policy profile.
 */
import type { ProfileMapEntry } from '../config/filter-config';
import type { AuthzEntry } from './authz';
import { authzEntryOf } from './authz';
import type { IdentityPattern } from './authz-patterns';
import { identityMatches } from './authz-patterns';
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

/** As written in filter.conf. */
export function describeIdentityPattern(p: IdentityPattern): string {
  return p.source;
}

export { identityMatches };

/**
 * A stable key of who the client is, for per-identity state (login throttling) and for comparing the
 * connections of one application: `uid:N` for a Unix peer (its uid is who it is), `spki:HEX` for a TLS
 * client certificate (stays across renewals with the same key), the address without port for TCP
 * (and TLS without certificate), `unknown` for in-process callers.
 */
export function identityKey(id: ClientIdentity): string {
  switch (id.kind) {
    case 'unix':
      return `uid:${id.uid}`;
    case 'tls':
      return id.certificate ? `spki:${id.certificate.spkiSha256}` : `tls:${hostOf(id.address)}`;
    case 'tcp':
      return `tcp:${hostOf(id.address)}`;
    default:
      return 'unknown';
  }
}

/** `host:port` or `[v6]:port` without the port. */
function hostOf(address: string): string {
  const i = address.lastIndexOf(':');
  return i < 0 ? address : address.slice(0, i);
}

/** The authorization entry that decides for this client; undefined when none matches (or there is no table). */
export function authzEntryFor(filter: CompiledFilter, id: ClientIdentity): AuthzEntry | undefined {
  return filter.authz ? authzEntryOf(filter.authz, id) : undefined;
}

/** The profile of the first matching entry, 'default' when none matches. */
export function profileOf(map: readonly ProfileMapEntry[], id: ClientIdentity): string {
  for (const e of map) if (identityMatches(e.identity, id)) return e.profile;
  return 'default';
}

/** The policy for this client and module alias: its profile's (authorization entry, else profile_map), else the default profile's. */
/**
 * The authorization entry's profile when it names one, else profile_map's. An identity the table refuses
 * never gets here with an alias (AuthzLayer); if it did, it would get the default profile's policy.
 */
export function policyFor(filter: CompiledFilter, id: ClientIdentity, alias: string): AliasPolicy | undefined {
  const entryProfile = authzEntryFor(filter, id)?.profile;
  if (filter.profiles === undefined) return filter.byAlias.get(alias);
  const profile = entryProfile ?? (filter.profileMap === undefined || filter.profileMap.length === 0 ? 'default' : profileOf(filter.profileMap, id));
  return (filter.profiles.get(profile) ?? filter.byAlias).get(alias);
}
