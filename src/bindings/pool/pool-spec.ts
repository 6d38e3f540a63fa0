/**
 * Pools and slot NATs as configured (filter.conf `pools`, `slot_nat`): plain
 * data, so the settings carrying them can be handed to worker processes.
 */

export const POOL_STRATEGIES = ['round-robin', 'least-outstanding', 'primary-standby'] as const;
export type PoolStrategyName = (typeof POOL_STRATEGIES)[number];

/** One member: a `modules` alias and the RFC 7512 URI choosing one of its tokens. */
export interface PoolMemberSpec {
  readonly alias: string;
  readonly uri: string;
  /** Relative share of new work (round-robin, least-outstanding); order of preference (primary-standby: list order). */
  readonly weight: number;
}

export interface PoolSpec {
  readonly kind: 'pool';
  /** The alias clients load. */
  readonly name: string;
  readonly members: readonly PoolMemberSpec[];
  readonly strategy: PoolStrategyName;
  /** Attribute types (CKA_*) that identify an object across members. */
  readonly matchAttributes: readonly number[];
  /** Health probe period of a member that is up, ms. */
  readonly probeIntervalMs: number;
  /** A member call that takes longer marks the member down (calls that return at once cannot be timed). */
  readonly callTimeoutMs: number;
  /** First and largest delay between probes of a member that is down, ms (doubling, with jitter). */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** CK_SLOT_ID of the pool's one slot. */
  readonly slotId: number;
  /** CK_TOKEN_INFO.label of the pool's token (default: the pool name). */
  readonly label: string;
}

export interface SlotNatSpec {
  readonly kind: 'nat';
  readonly name: string;
  /** Aliases whose slots are listed, in this order. */
  readonly aliases: readonly string[];
}

export type VirtualAliasSpec = PoolSpec | SlotNatSpec;

export const POOL_DEFAULTS = Object.freeze({
  strategy: 'round-robin' as PoolStrategyName,
  matchAttributes: Object.freeze(['CKA_CLASS', 'CKA_ID', 'CKA_LABEL']),
  probeIntervalMs: 5000,
  callTimeoutMs: 10_000,
  retryBaseMs: 100,
  retryMaxMs: 30_000,
  slotId: 0,
});
