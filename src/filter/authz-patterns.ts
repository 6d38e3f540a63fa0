/**
 * Client identity patterns of filter.conf (profile_map, identity_groups,
 * authorization). A leaf module: the config loader parses with it, the
 * policy matches with it.
 *
 * Pattern forms (one string each):
 *  - `uid:N`, `gid:N`: the Unix socket peer (SO_PEERCRED real uid, primary gid);
 *  - `user:NAME`, `group:NAME`: the same, the name resolved to its number from
 *    /etc/passwd and /etc/group when the file is loaded (an unknown name is an error);
 *  - `unix`, `tcp`, `tls`: any peer of that transport (`tls` with or without a certificate);
 *  - `subject:DN`, `issuer:DN`: the verified client certificate's subject or issuer DN,
 *    as PeerCertificate prints it (RFC 4514 order, e.g. `CN=app1,O=Example`);
 *  - `san:TYPE:VALUE`: one subjectAltName entry (`san:DNS:app1.example.com`, `san:URI:...`,
 *    `san:email:...`, `san:IP:...`);
 *  - `sha256:HEX`, `spki:HEX`: SHA-256 of the certificate's DER, or of its SubjectPublicKeyInfo
 *    (stays across renewals with the same key); hex case and `:` separators are ignored;
 *  - `@NAME`: any pattern of identity group NAME (identity_groups);
 *  - `*`: anyone.
 * subject, issuer and san values are globs: `*` matches any run of characters (commas included,
 * so `subject:CN=*,O=Example` also matches `CN=a,OU=b,O=Example`), `?` one character, `\` makes the
 * next character literal; the whole value must match, case-sensitively.
 */
import fs from 'node:fs';
import type { PeerCertificate } from '../server/transport/types';

/** What a pattern is matched against; structurally the same as identity.ts ClientIdentity. */
export type MatchableIdentity =
  | { readonly kind: 'unix'; readonly uid: number; readonly gid: number }
  | { readonly kind: 'tcp' }
  | { readonly kind: 'tls'; readonly certificate?: PeerCertificate }
  | { readonly kind: 'unknown' };

export type IdentityPattern =
  | { kind: 'uid'; uid: number; source: string }
  | { kind: 'gid'; gid: number; source: string }
  | { kind: 'transport'; transport: 'unix' | 'tcp' | 'tls'; source: string }
  | { kind: 'certificate'; field: 'subject' | 'issuer' | 'san'; glob: RegExp; source: string }
  | { kind: 'fingerprint'; field: 'sha256' | 'spkiSha256'; hex: string; source: string }
  | { kind: 'group'; name: string; members: readonly IdentityPattern[]; source: string }
  | { kind: 'any'; source: string };

export class IdentityPatternError extends Error {}

/** Names to numbers of a passwd(5) or group(5) file: `name:x:NUMBER:...`. */
function idsOf(file: string): Map<string, number> {
  const out = new Map<string, number>();
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^[0-9]+$/.test(f[2])) out.set(f[0], Number(f[2]));
  }
  return out;
}

/** Glob to an anchored RegExp (see the file comment). */
export function globRegex(glob: string): RegExp {
  let src = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '\\' && i + 1 < glob.length) src += glob[++i].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    else if (c === '*') src += '[\\s\\S]*';
    else if (c === '?') src += '[\\s\\S]';
    else src += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${src}$`);
}

export interface PatternContext {
  /** Identity groups parsed so far (a group may name groups defined before it). */
  groups: ReadonlyMap<string, readonly IdentityPattern[]>;
  /** Default /etc/passwd, /etc/group; tests may point elsewhere. */
  passwdFile?: string;
  groupFile?: string;
}

const MAX_ID = 0xffffffff;

/** Parses one pattern. Throws IdentityPatternError with a message naming the rule broken. */
export function parseIdentityPattern(s: string, ctx: PatternContext): IdentityPattern {
  if (s === '*') return { kind: 'any', source: s };
  if (s === 'unix' || s === 'tcp' || s === 'tls') return { kind: 'transport', transport: s, source: s };
  if (s.startsWith('@')) {
    const members = ctx.groups.get(s.slice(1));
    if (members === undefined) throw new IdentityPatternError(`unknown identity group '${s.slice(1)}' (identity_groups: ${[...ctx.groups.keys()].join(', ') || 'none'}; a group is known after its definition)`);
    return { kind: 'group', name: s.slice(1), members, source: s };
  }
  const colon = s.indexOf(':');
  const kind = colon < 0 ? s : s.slice(0, colon);
  const v = colon < 0 ? '' : s.slice(colon + 1);
  const number = (what: string): number => {
    if (!/^[0-9]+$/.test(v) || Number(v) > MAX_ID) throw new IdentityPatternError(`${what}: must be a number 0..${MAX_ID}`);
    return Number(v);
  };
  switch (kind) {
    case 'uid':
      return { kind: 'uid', uid: number('uid:N'), source: s };
    case 'gid':
      return { kind: 'gid', gid: number('gid:N'), source: s };
    case 'user':
    case 'group': {
      const file = kind === 'user' ? (ctx.passwdFile ?? '/etc/passwd') : (ctx.groupFile ?? '/etc/group');
      const n = idsOf(file).get(v);
      if (n === undefined) throw new IdentityPatternError(`${kind}:${v}: no such ${kind} in ${file}`);
      return kind === 'user' ? { kind: 'uid', uid: n, source: s } : { kind: 'gid', gid: n, source: s };
    }
    case 'subject':
    case 'issuer':
    case 'san':
      if (v === '') throw new IdentityPatternError(`${kind}: needs a value`);
      if (kind === 'san' && !/^(DNS|URI|email|IP|IP Address):/.test(v)) throw new IdentityPatternError('san: must be san:DNS:..., san:URI:..., san:email:... or san:IP:...');
      return { kind: 'certificate', field: kind, glob: globRegex(v), source: s };
    case 'sha256':
    case 'spki': {
      const hex = v.replace(/:/g, '').toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(hex)) throw new IdentityPatternError(`${kind}: must be 64 hex digits (SHA-256), ':' separators allowed`);
      return { kind: 'fingerprint', field: kind === 'sha256' ? 'sha256' : 'spkiSha256', hex, source: s };
    }
    default:
      throw new IdentityPatternError('must be uid:N, gid:N, user:NAME, group:NAME, unix, tcp, tls, subject:DN, issuer:DN, san:TYPE:VALUE, sha256:HEX, spki:HEX, @GROUP or *');
  }
}

export function identityMatches(p: IdentityPattern, id: MatchableIdentity): boolean {
  switch (p.kind) {
    case 'uid':
      return id.kind === 'unix' && id.uid === p.uid;
    case 'gid':
      return id.kind === 'unix' && id.gid === p.gid;
    case 'transport':
      return id.kind === p.transport;
    case 'certificate': {
      const cert = id.kind === 'tls' ? id.certificate : undefined;
      if (cert === undefined) return false;
      if (p.field === 'san') return cert.san.some((e) => p.glob.test(e));
      return p.glob.test(cert[p.field]);
    }
    case 'fingerprint': {
      const cert = id.kind === 'tls' ? id.certificate : undefined;
      return cert !== undefined && cert[p.field].replace(/:/g, '').toLowerCase() === p.hex;
    }
    case 'group':
      return p.members.some((m) => identityMatches(m, id));
    case 'any':
      return true;
  }
}
