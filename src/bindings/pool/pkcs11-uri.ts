/**
 * PKCS#11 URIs (RFC 7512) as far as they select a token: the path
 * attributes that name a library, a slot or a token. Query attributes
 * (`?pin-value=...`, `?module-path=...`) select nothing and are refused, as
 * are object attributes (`object`, `type`, `id`): a pool member is a token,
 * not an object.
 *
 * Grammar (RFC 7512 section 2.3): `pkcs11:` then `attr=value` pairs separated
 * by `;`; values are percent-encoded UTF-8 (`%20`); an attribute appears at
 * most once. Matching compares the decoded value with the blank-padded
 * fixed-width field of the info structure with its trailing blanks removed,
 * as section 2.4 says; `library-version` is `M` or `M.m`; `slot-id` a decimal
 * CK_SLOT_ID. An attribute that is absent matches anything.
 */
import { ProxyError } from '../../errors';

export class Pkcs11UriError extends ProxyError {
  readonly code = 'PKCS11_URI';
}

/** Token-selecting path attributes of RFC 7512, with their info-structure source. */
export const TOKEN_URI_ATTRIBUTES = [
  'token', // CK_TOKEN_INFO.label
  'manufacturer', // CK_TOKEN_INFO.manufacturerID
  'serial', // CK_TOKEN_INFO.serialNumber
  'model', // CK_TOKEN_INFO.model
  'slot-id', // CK_SLOT_ID
  'slot-description', // CK_SLOT_INFO.slotDescription
  'slot-manufacturer', // CK_SLOT_INFO.manufacturerID
  'library-manufacturer', // CK_INFO.manufacturerID
  'library-description', // CK_INFO.libraryDescription
  'library-version', // CK_INFO.libraryVersion
] as const;
export type TokenUriAttribute = (typeof TOKEN_URI_ATTRIBUTES)[number];

/** RFC 7512 attributes that exist but do not select a token. */
const OBJECT_ATTRIBUTES: ReadonlySet<string> = new Set(['object', 'type', 'id']);

/** A parsed URI: decoded attribute values; absent attributes match anything. */
export interface TokenUri {
  readonly source: string;
  readonly attributes: ReadonlyMap<TokenUriAttribute, string>;
  /** slot-id as a number; null when absent. */
  readonly slotId: number | null;
  /** library-version as [major, minor | null]; null when absent. */
  readonly libraryVersion: readonly [number, number | null] | null;
}

/** RFC 3986 pchar minus `;` (the attribute separator): what may appear unescaped in a path value. */
const PATH_VALUE = /^([A-Za-z0-9\-._~!$&'()*+,=:@]|%[0-9A-Fa-f]{2})*$/;
const KNOWN: ReadonlySet<string> = new Set(TOKEN_URI_ATTRIBUTES);

function decode(raw: string, attr: string): string {
  if (!PATH_VALUE.test(raw)) throw new Pkcs11UriError(`attribute '${attr}': value has a character that must be percent-encoded`);
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new Pkcs11UriError(`attribute '${attr}': percent-encoding is not UTF-8`);
  }
}

/** Parses a token-selecting PKCS#11 URI. Throws Pkcs11UriError naming the attribute at fault. */
export function parseTokenUri(source: string): TokenUri {
  if (!/^pkcs11:/i.test(source)) throw new Pkcs11UriError("must start with 'pkcs11:'");
  const rest = source.slice(7);
  const q = rest.indexOf('?');
  if (q >= 0) throw new Pkcs11UriError(`query attributes ('${rest.slice(q)}') do not select a token`);
  const attributes = new Map<TokenUriAttribute, string>();
  for (const part of rest.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Pkcs11UriError(`'${part}' is not attr=value`);
    const name = part.slice(0, eq).toLowerCase();
    if (OBJECT_ATTRIBUTES.has(name)) throw new Pkcs11UriError(`attribute '${name}' names an object, not a token`);
    if (!KNOWN.has(name)) throw new Pkcs11UriError(`unknown attribute '${name}' (known: ${TOKEN_URI_ATTRIBUTES.join(', ')})`);
    const attr = name as TokenUriAttribute;
    if (attributes.has(attr)) throw new Pkcs11UriError(`attribute '${attr}' given twice`);
    attributes.set(attr, decode(part.slice(eq + 1), attr));
  }
  let slotId: number | null = null;
  const sid = attributes.get('slot-id');
  if (sid !== undefined) {
    if (!/^[0-9]{1,15}$/.test(sid)) throw new Pkcs11UriError(`attribute 'slot-id': '${sid}' is not a decimal number`);
    slotId = Number(sid);
  }
  let libraryVersion: [number, number | null] | null = null;
  const lv = attributes.get('library-version');
  if (lv !== undefined) {
    const m = /^([0-9]{1,3})(?:\.([0-9]{1,3}))?$/.exec(lv);
    if (!m) throw new Pkcs11UriError(`attribute 'library-version': '${lv}' is not M or M.m`);
    libraryVersion = [Number(m[1]), m[2] === undefined ? null : Number(m[2])];
  }
  return Object.freeze({ source, attributes, slotId, libraryVersion });
}

/** What a URI is matched against: the info structures of one slot, fields as the wire carries them. */
export interface TokenDescription {
  readonly slotId: number;
  readonly token: { label: Buffer; manufacturerID: Buffer; serialNumber: Buffer; model: Buffer };
  readonly slot: { slotDescription: Buffer; manufacturerID: Buffer };
  readonly library: { manufacturerID: Buffer; libraryDescription: Buffer; libraryVersion: { major: Buffer; minor: Buffer } };
}

/** A blank-padded field as text: UTF-8, trailing blanks (and NULs some modules leave) removed. */
export function fieldText(b: Buffer): string {
  return b.toString('utf8').replace(/[ \0]+$/, '');
}

export function uriMatches(uri: TokenUri, d: TokenDescription): boolean {
  for (const [attr, want] of uri.attributes) {
    let have: string | null;
    switch (attr) {
      case 'token': have = fieldText(d.token.label); break;
      case 'manufacturer': have = fieldText(d.token.manufacturerID); break;
      case 'serial': have = fieldText(d.token.serialNumber); break;
      case 'model': have = fieldText(d.token.model); break;
      case 'slot-description': have = fieldText(d.slot.slotDescription); break;
      case 'slot-manufacturer': have = fieldText(d.slot.manufacturerID); break;
      case 'library-manufacturer': have = fieldText(d.library.manufacturerID); break;
      case 'library-description': have = fieldText(d.library.libraryDescription); break;
      case 'slot-id':
      case 'library-version':
        have = null;
        break;
    }
    if (have !== null && have !== want) return false;
  }
  if (uri.slotId !== null && uri.slotId !== d.slotId) return false;
  if (uri.libraryVersion !== null) {
    const [major, minor] = uri.libraryVersion;
    if (d.library.libraryVersion.major[0] !== major) return false;
    if (minor !== null && d.library.libraryVersion.minor[0] !== minor) return false;
  }
  return true;
}
