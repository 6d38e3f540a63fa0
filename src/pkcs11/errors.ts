import { ProxyError } from '../errors';
import { CKR_GENERAL_ERROR, rvName } from './constants';

/**
 * A PKCS#11 failure carried as a CK_RV. Layers throw it; the dispatcher turns
 * it into the procedure's error result with this rv. It never crosses the
 * wire as anything but the rv.
 */
export class Pkcs11Error extends ProxyError {
  readonly code: string;
  constructor(
    readonly rv: number,
    readonly fn?: string,
  ) {
    super(fn ? `${fn}: ${rvName(rv)}` : rvName(rv));
    this.name = 'Pkcs11Error';
    this.code = rvName(rv);
  }
}

/** pkcs11js reports a module's CK_RV as "CKR_NAME:decimal" in the message (wrapped or not). */
const PKCS11JS_RV = /\b(CKR_[A-Z0-9_]+|0x[0-9a-fA-F]+):(\d+)\b/;

/** CK_RV carried by a value thrown from pkcs11js or from a layer; undefined if it carries none. */
export function pkcs11RvOf(err: unknown): number | undefined {
  if (err instanceof Pkcs11Error) return err.rv;
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  if (e.name === 'Pkcs11Error' && typeof e.code === 'number') return e.code;
  if (typeof e.message === 'string') {
    const m = PKCS11JS_RV.exec(e.message);
    if (m) return Number(m[2]);
  }
  return undefined;
}

/** CK_RV of a thrown value; CKR_GENERAL_ERROR when it carries none. */
export function rvOf(err: unknown): number {
  return pkcs11RvOf(err) ?? CKR_GENERAL_ERROR;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
