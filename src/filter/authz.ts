/**
 * The authorisation table of filter.conf (`identity_groups`, `authorization`,
 * `login_throttle`), compiled. Decision rules:
 *  - without `authorization`, every identity may load every alias (as before);
 *  - with it, the first entry (file order) one of whose `identities` matches
 *    the client decides; no entry: refused (fail closed). The entry gives the
 *    aliases the client may load (C_LoadModule, and the default alias at a
 *    C_Initialize without C_LoadModule), the filter profile (else profile_map
 *    decides), and optionally the tokens it sees (slot view);
 *  - a refusal answers CKR_FUNCTION_FAILED (see AUTHZ_REFUSED_RV) and emits
 *    an `authorization_refused` audit event.
 * A leaf apart from its pattern module: the config loader builds these types.
 */
import type { IdentityPattern, MatchableIdentity } from './authz-patterns';
import { identityMatches } from './authz-patterns';
import { ck } from '../pkcs11/constants';

/**
 * What C_LoadModule (and C_Initialize, px_JoinApp, later calls after a reload) answers a client the table
 * refuses. rpc/pkcs11.x C_LoadModule carries a bare CK_RV; CKR_FUNCTION_FAILED is what it already answers for
 * an alias whose module cannot be had (Caml Crush's answer), so a client sees "this module is not available
 * to you" without learning whether it exists; CKR_GENERAL_ERROR would claim an unrecoverable fault.
 */
export const AUTHZ_REFUSED_RV: number = ck.CKR_FUNCTION_FAILED;

/** A token a slot view lets through; every field given must equal the token's (trailing blanks ignored). */
export interface TokenSelector {
  readonly label?: string;
  readonly serial?: string;
  readonly manufacturer?: string;
  readonly model?: string;
  /** As written, for logs. */
  readonly source: string;
}

export interface AuthzEntry {
  readonly name: string;
  readonly identities: readonly IdentityPattern[];
  readonly aliases: ReadonlySet<string>;
  /** A profile name (or 'default'); undefined: profile_map decides. */
  readonly profile?: string;
  /** undefined: every slot; else the tokens visible (renumbered 0..n-1 in module order). */
  readonly tokens?: readonly TokenSelector[];
  /** file:line:col */
  readonly where: string;
}

export interface LoginThrottle {
  /** Delay after the first failure, doubled after each further one, ms. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Consecutive failures that lock the identity out of the token; 0: never. */
  readonly lockoutFailures: number;
  readonly lockoutMs: number;
}

export const DEFAULT_LOGIN_THROTTLE: LoginThrottle = Object.freeze({ baseDelayMs: 1000, maxDelayMs: 60_000, lockoutFailures: 0, lockoutMs: 15 * 60_000 });

export interface AuthzTable {
  readonly entries: readonly AuthzEntry[];
}

export function authzEntryOf(table: AuthzTable, id: MatchableIdentity): AuthzEntry | undefined {
  return table.entries.find((e) => e.identities.some((p) => identityMatches(p, id)));
}

const trimBlank = (s: string): string => s.replace(/[ \0]+$/, '');

/** The public CK_TOKEN_INFO strings a selector looks at (blank-padded as the token gives them). */
export interface TokenStrings {
  label: string;
  serial: string;
  manufacturer: string;
  model: string;
}

export function tokenSelected(sel: readonly TokenSelector[], t: TokenStrings): boolean {
  return sel.some(
    (s) =>
      (s.label === undefined || s.label === trimBlank(t.label)) &&
      (s.serial === undefined || s.serial === trimBlank(t.serial)) &&
      (s.manufacturer === undefined || s.manufacturer === trimBlank(t.manufacturer)) &&
      (s.model === undefined || s.model === trimBlank(t.model)),
  );
}

export class TokenSelectorError extends Error {}

/**
 * `label:TEXT`, `serial:TEXT`, or an RFC 7512 PKCS#11 URI with token attributes only:
 * `pkcs11:token=app1;serial=0123` (also `manufacturer=`, `model=`; values percent-decoded).
 */
export function parseTokenSelector(s: string): TokenSelector {
  if (s.startsWith('label:')) return { label: s.slice(6), source: s };
  if (s.startsWith('serial:')) return { serial: s.slice(7), source: s };
  if (!s.startsWith('pkcs11:')) throw new TokenSelectorError('must be label:TEXT, serial:TEXT or pkcs11:token=...;serial=...');
  const path = s.slice(7).split('?')[0];
  const out: { -readonly [K in keyof TokenSelector]: TokenSelector[K] } = { source: s };
  for (const part of path.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new TokenSelectorError(`URI attribute '${part}' has no '='`);
    let v: string;
    try {
      v = decodeURIComponent(part.slice(eq + 1));
    } catch {
      throw new TokenSelectorError(`URI attribute '${part}': bad percent-encoding`);
    }
    const k = part.slice(0, eq);
    if (k === 'token') out.label = v;
    else if (k === 'serial') out.serial = v;
    else if (k === 'manufacturer') out.manufacturer = v;
    else if (k === 'model') out.model = v;
    else throw new TokenSelectorError(`URI attribute '${k}': only token, serial, manufacturer and model select a token`);
  }
  if (out.label === undefined && out.serial === undefined && out.manufacturer === undefined && out.model === undefined) {
    throw new TokenSelectorError('a pkcs11: URI needs at least one of token=, serial=, manufacturer=, model=');
  }
  return out;
}
