import { Pkcs11Passthrough } from '../../generated/pkcs11_rpc';
import type { C_Login_args, Pkcs11Calls, px_rv } from '../../generated/pkcs11_rpc';
import type { LoginThrottle } from '../../filter/authz';
import { describeIdentity, identityKey } from '../../filter/identity';
import type { CompiledFilter } from '../../filter/policy';
import { CKR_OK, CKR_PIN_INCORRECT, ck, rvName } from '../../pkcs11/constants';
import { audit } from '../audit';
import type { ConnectionState } from '../dispatch/connection-state';
import type { Logger } from '../log';
import { settle } from './generic';
import { aliasOf } from './router-layer';
import { connectionFields } from '../audit-fields';

const CKR_PIN_LOCKED = ck.CKR_PIN_LOCKED;

/** Failures of one identity on one token, in this process. Deleted when back to zero and unlocked. */
interface Attempts {
  /** Consecutive CKR_PIN_INCORRECT since the last success or lock-out. */
  failures: number;
  /** Date.now() of the last failure; meaningful iff failures > 0. */
  lastFailureAt: number;
  /** Date.now() until which C_Login answers CKR_PIN_LOCKED; 0: not locked. */
  lockedUntil: number;
  /** The logins of this key run one after another: each waits for the previous outcome, then its own delay. */
  queue: Promise<unknown>;
}

/** Delay owed after `failures` consecutive failures: base * 2^(failures-1), capped. */
export function backoffDelay(t: LoginThrottle, failures: number): number {
  if (failures <= 0 || t.baseDelayMs === 0) return 0;
  return Math.min(t.maxDelayMs, t.baseDelayMs * 2 ** Math.min(failures - 1, 30));
}

/**
 * Login audit and throttling, directly above the shared-login layer (module
 * session handles here; the slot of a session comes from C_GetSessionInfo).
 * Every C_Login's outcome is audited (`login` event: identity, alias, slot,
 * user type, CK_RV; never the PIN). With filter.conf `login_throttle`, a
 * CKR_PIN_INCORRECT counts against the client identity on that token (key:
 * identityKey + alias + module slot): the next C_Login waits until the
 * backoff has passed before it reaches the module (the answer is delayed, not
 * replaced: PKCS#11 has no "try later" code, and a refusal would tell a
 * guesser nothing a delay does not); after `lockout_failures` consecutive
 * failures C_Login answers CKR_PIN_LOCKED for `lockout_seconds` without
 * reaching the module. The state lives in this process: with several workers
 * each keeps its own count (a client spread over N workers gets N times the
 * attempts); a success resets the count.
 */
export class LoginThrottleLayer extends Pkcs11Passthrough<ConnectionState> {
  private readonly attempts = new Map<string, Attempts>();

  constructor(
    next: Pkcs11Calls<ConnectionState>,
    private readonly filter: () => CompiledFilter,
    private readonly defaultAlias: string,
    private readonly log: Logger,
  ) {
    super(next);
  }

  async C_Login(conn: ConnectionState, a: C_Login_args): Promise<px_rv> {
    const alias = aliasOf(conn, this.defaultAlias);
    let slot: number | null = null;
    try {
      const info = await this.next.C_GetSessionInfo(conn, { session: a.session });
      if (info.rv === CKR_OK) slot = info.info.slotID;
    } catch {
      // No slot: the login gets the layer below's own answer (CKR_SESSION_HANDLE_INVALID, ...), audited below.
    }
    const t = this.filter().loginThrottle ?? null;
    if (t === null || slot === null) return this.outcome(conn, a, alias, slot, await settle(() => this.next.C_Login(conn, a)), 0, null);
    const key = `${identityKey(conn.identity)}\u0000${alias}\u0000${slot}`;
    let s = this.attempts.get(key);
    if (s === undefined) {
      s = { failures: 0, lastFailureAt: 0, lockedUntil: 0, queue: Promise.resolve() };
      this.attempts.set(key, s);
    }
    const st = s;
    const run = st.queue.then(() => this.attempt(conn, a, alias, slot, key, st, t));
    st.queue = run.catch(() => undefined);
    return run;
  }

  private async attempt(conn: ConnectionState, a: C_Login_args, alias: string, slot: number, key: string, s: Attempts, t: LoginThrottle): Promise<number> {
    if (s.lockedUntil > Date.now()) return this.outcome(conn, a, alias, slot, CKR_PIN_LOCKED, 0, s, 'locked_out');
    if (s.lockedUntil !== 0) s.lockedUntil = 0;
    const wait = s.failures > 0 ? s.lastFailureAt + backoffDelay(t, s.failures) - Date.now() : 0;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const rv = await settle(() => this.next.C_Login(conn, a));
    let outcome: string | undefined;
    if (rv === CKR_PIN_INCORRECT) {
      s.failures += 1;
      s.lastFailureAt = Date.now();
      if (t.lockoutFailures > 0 && s.failures >= t.lockoutFailures) {
        s.lockedUntil = s.lastFailureAt + t.lockoutMs;
        s.failures = 0;
        outcome = 'locked';
      }
    } else if (rv === CKR_OK) {
      s.failures = 0;
    }
    const r = this.outcome(conn, a, alias, slot, rv, Math.max(0, wait), s, outcome);
    if (s.failures === 0 && s.lockedUntil === 0) this.attempts.delete(key);
    return r;
  }

  /** Audits (and at failures logs) one login's outcome; returns its CK_RV. */
  private outcome(conn: ConnectionState, a: C_Login_args, alias: string, slot: number | null, rv: number, delayedMs: number, s: Attempts | null, what?: string): number {
    const outcome = what ?? (rv === CKR_OK ? 'success' : 'failure');
    if (rv !== CKR_OK) {
      const next = s && s.failures > 0 ? `, failure ${s.failures}, a next login waits ${backoffDelay(this.filter().loginThrottle!, s.failures)} ms` : '';
      const locked = s && s.lockedUntil > 0 ? `, locked out until ${new Date(s.lockedUntil).toISOString()}` : '';
      this.log('warn', `login: C_Login ${outcome} with ${rvName(rv)} for alias '${alias}' slot ${slot ?? '?'}, connection ${conn.id} (${describeIdentity(conn.identity)})${delayedMs > 0 ? `, answered after ${delayedMs} ms` : ''}${next}${locked}`);
    }
    audit({
      event: 'login',
      outcome,
      rv: rvName(rv),
      user_type: a.userType,
      slot,
      ...connectionFields(conn),
      // The identity as authorization entries match it (spki:..., uid:...).
      identity_key: identityKey(conn.identity),
      alias,
      delayed_ms: delayedMs,
      failures: s?.failures ?? null,
      locked_until: s && s.lockedUntil > 0 ? new Date(s.lockedUntil).toISOString() : null,
    });
    return rv;
  }
}
