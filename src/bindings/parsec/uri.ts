/**
 * A `modules` entry whose path names a Parsec service instead of a library:
 *
 *   parsec:/run/parsec/parsec.sock[?auth=unix|direct&app=NAME&timeout_ms=N&max_response_bytes=N]
 *
 * auth=unix (default): UnixPeerCredentials, the daemon's own uid (one Parsec
 * client for every proxy client). auth=direct: the Direct authenticator;
 * with app=NAME every client is that Parsec application, without it each
 * client's identity (src/filter/identity.ts identityKey: uid:N, spki:HEX,
 * ...) is its application name, so tenants see only their own keys.
 */
import path from 'node:path';
import { ProxyError } from '../../errors';

export const PARSEC_PATH_PREFIX = 'parsec:';

export class ParsecConfigError extends ProxyError {
  readonly code = 'PARSEC_CONFIG';
}

export interface ParsecSpec {
  readonly socket: string;
  readonly auth: 'unix' | 'direct';
  /** Direct: the fixed application name; null: each client's identity. */
  readonly app: string | null;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}

export const PARSEC_DEFAULT_TIMEOUT_MS = 10_000;
/** ListKeys of a few thousand keys fits; a larger answer is refused before it is read. */
export const PARSEC_DEFAULT_MAX_RESPONSE = 4 * 1024 * 1024;
/** Parsec's own limit on an application name is the auth field's u16; names here stay readable. */
const MAX_APP_NAME = 255;

export function isParsecPath(p: string): boolean {
  return p.startsWith(PARSEC_PATH_PREFIX);
}

function intOption(key: string, v: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(v)) throw new ParsecConfigError(`parsec: ${key} must be a whole number, not ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min || n > max) throw new ParsecConfigError(`parsec: ${key} must be in ${min}..${max}, not ${n}`);
  return n;
}

/** The spec of a `parsec:` path; throws ParsecConfigError saying what is wrong. */
export function parseParsecPath(p: string): ParsecSpec {
  if (!isParsecPath(p)) throw new ParsecConfigError(`not a parsec: path: ${JSON.stringify(p)}`);
  const rest = p.slice(PARSEC_PATH_PREFIX.length);
  const q = rest.indexOf('?');
  const socket = q < 0 ? rest : rest.slice(0, q);
  if (!path.isAbsolute(socket)) throw new ParsecConfigError(`parsec: the socket path must be absolute: ${JSON.stringify(socket)}`);
  let auth: ParsecSpec['auth'] = 'unix';
  let app: string | null = null;
  let timeoutMs = PARSEC_DEFAULT_TIMEOUT_MS;
  let maxResponseBytes = PARSEC_DEFAULT_MAX_RESPONSE;
  const seen = new Set<string>();
  for (const part of q < 0 ? [] : rest.slice(q + 1).split('&')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
    if (seen.has(key)) throw new ParsecConfigError(`parsec: option ${JSON.stringify(key)} given twice`);
    seen.add(key);
    switch (key) {
      case 'auth':
        if (value !== 'unix' && value !== 'direct') throw new ParsecConfigError(`parsec: auth must be "unix" or "direct", not ${JSON.stringify(value)}`);
        auth = value;
        break;
      case 'app':
        if (value.length === 0 || Buffer.byteLength(value) > MAX_APP_NAME) {
          throw new ParsecConfigError(`parsec: app must be 1..${MAX_APP_NAME} bytes`);
        }
        app = value;
        break;
      case 'timeout_ms':
        timeoutMs = intOption(key, value, 1, 600_000);
        break;
      case 'max_response_bytes':
        maxResponseBytes = intOption(key, value, 4096, 64 * 1024 * 1024);
        break;
      default:
        throw new ParsecConfigError(`parsec: unknown option ${JSON.stringify(key)} (options: auth, app, timeout_ms, max_response_bytes)`);
    }
  }
  if (app !== null && auth !== 'direct') throw new ParsecConfigError('parsec: app needs auth=direct');
  return Object.freeze({ socket, auth, app, timeoutMs, maxResponseBytes });
}
