import type { PoolMember } from './member';
import type { PoolStrategyName } from './pool-spec';

/**
 * Chooses the member new work goes to, among those that are up and not in
 * `exclude` (members already tried for this call). Null: none is left.
 * The selection policy sees members through this narrow interface only.
 */
export interface PoolStrategy {
  pick(members: readonly PoolMember[], exclude: ReadonlySet<PoolMember>): PoolMember | null;
}

function candidates(members: readonly PoolMember[], exclude: ReadonlySet<PoolMember>): PoolMember[] {
  return members.filter((m) => m.state === 'up' && !exclude.has(m));
}

/**
 * Smooth weighted round-robin: each pick adds every candidate's weight to
 * its running score, takes the highest and subtracts the candidates' total
 * from it. Over any window of sum(weights) picks each member gets its
 * weight's share, interleaved rather than in bursts.
 */
export class RoundRobin implements PoolStrategy {
  pick(members: readonly PoolMember[], exclude: ReadonlySet<PoolMember>): PoolMember | null {
    const c = candidates(members, exclude);
    if (c.length === 0) return null;
    let total = 0;
    let best = c[0];
    for (const m of c) {
      m.current += m.weight;
      total += m.weight;
      if (m.current > best.current) best = m;
    }
    best.current -= total;
    return best;
  }
}

/** Fewest calls in flight per unit of weight; ties go round-robin. */
export class LeastOutstanding implements PoolStrategy {
  private readonly tie = new RoundRobin();
  pick(members: readonly PoolMember[], exclude: ReadonlySet<PoolMember>): PoolMember | null {
    const c = candidates(members, exclude);
    if (c.length === 0) return null;
    const load = (m: PoolMember): number => m.outstanding / m.weight;
    const min = Math.min(...c.map(load));
    return this.tie.pick(c.filter((m) => load(m) === min), new Set());
  }
}

/** The first member (configuration order) that is up; the others stand by. */
export class PrimaryStandby implements PoolStrategy {
  pick(members: readonly PoolMember[], exclude: ReadonlySet<PoolMember>): PoolMember | null {
    return candidates(members, exclude)[0] ?? null;
  }
}

export function createStrategy(name: PoolStrategyName): PoolStrategy {
  switch (name) {
    case 'round-robin':
      return new RoundRobin();
    case 'least-outstanding':
      return new LeastOutstanding();
    case 'primary-standby':
      return new PrimaryStandby();
  }
}
