import type { Backend, BackendContext } from '../backend';
import type { px_info, px_mechanism_info, px_token_info } from '../../generated/pkcs11_rpc';
import type { TokenUri } from './pkcs11-uri';

/**
 * Health of a member. `up`: its token was found and answers; new work may
 * go to it. `down`: it failed (or was never found); only health probes
 * reach it until one succeeds.
 */
export type MemberState = 'up' | 'down';

/** One member of a pool: a backend, the token chosen by URI, its health and its load. */
export class PoolMember {
  state: MemberState = 'down';
  /** The state last reported (log, audit); null before the first probe ended. */
  announced: MemberState | null = null;
  /** Why the member is down (last failure); '' while up. */
  reason = 'not probed yet';
  /** The member's CK_SLOT_ID holding the token; set iff the token was found since the member last went down. */
  slotID: number | null = null;
  /**
   * Bumped each time the member goes down: module sessions and object
   * handles learnt under an older generation are dead (closed, or lost with
   * a restarted module) and are never used again.
   */
  generation = 0;
  /** Token info and mechanisms as of the last admission. */
  tokenInfo: px_token_info | null = null;
  mechanisms: Map<number, px_mechanism_info> | null = null;
  /** The module is logged in (pool PIN) in this generation. */
  loggedIn = false;
  /** Set while a C_Login of this member runs; others wait for it. */
  loggingIn: Promise<void> | null = null;
  /** A module session of the pool's own (object look-ups, logins, probes), this generation; null: not open. */
  lookupSession: number | null = null;
  /** Look-ups (C_FindObjects on lookupSession) one at a time. */
  lookupChain: Promise<unknown> = Promise.resolve();
  /** Pool object handle → module handle, this generation. */
  readonly handles = new Map<number, number>();
  /** Module handle → pool object handle, this generation. */
  readonly reverse = new Map<number, number>();
  /** Calls in flight at the module. */
  outstanding = 0;
  /** Calls sent, by procedure, since start (tests and metrics read them). */
  readonly calls = new Map<string, number>();
  /** Smooth weighted round-robin state (strategy.ts). */
  current = 0;
  /** Time it went down (ms, performance.now()), for the backoff's uptime. */
  upSince = 0;
  /** CK_INFO of the module, as of the last admission. */
  libraryInfo: px_info | null = null;
  readonly ctx: BackendContext;

  constructor(
    readonly index: number,
    readonly alias: string,
    readonly uri: TokenUri,
    readonly weight: number,
    readonly backend: Backend,
  ) {
    this.ctx = Object.freeze({ appId: 0, alias });
  }

  /** `alias` + URI, how logs and metrics name the member. */
  get name(): string {
    return `${this.alias} ${this.uri.source}`;
  }

  count(procedure: string): void {
    this.calls.set(procedure, (this.calls.get(procedure) ?? 0) + 1);
  }

  /** Forgets every module handle: the member went down or came back. */
  resetGeneration(): void {
    this.generation++;
    this.handles.clear();
    this.reverse.clear();
    this.loggedIn = false;
    this.loggingIn = null;
    this.lookupSession = null;
    this.slotID = null;
  }
}
