/**
 * Loc-RIB best-path changes -> FibChange for the kernel FIB writer. Owns the record of what was
 * last reported per prefix, so the writer sees a change only when the next-hop set of a LEARNED
 * route really changed, and a removal (empty nextHops) only for a prefix it was given before
 * (gone from the Loc-RIB, or the best became a locally originated route).
 *
 * PURE: no I/O, no timers. Never reports locally originated routes.
 */
import type { FibChange } from '../speaker-api.ts';
import type { AfiSafi } from '../types.ts';
import { compareAddress, type Decision } from '../rib/decision.ts';
import type { BestChange } from '../rib/rib.ts';

function familyOf(af: AfiSafi): 4 | 6 {
  return af === 'ipv6-unicast' ? 6 : 4;
}

const NONE: readonly string[] = Object.freeze([]);
/** One shared frozen array per single next hop: a bulk load of /32s allocates no arrays here. */
const singles = new Map<string, readonly string[]>();

function single(nh: string): readonly string[] {
  let a = singles.get(nh);
  if (a === undefined) {
    a = Object.freeze([nh]);
    if (singles.size < 65_536) singles.set(nh, a);
  }
  return a;
}

/** Distinct next hops of the ECMP set of a learned best path, sorted; [] when none or local. */
export function learnedNextHops(best: Decision['best'] | undefined, multipath: readonly Decision['best'][]): readonly string[] {
  if (best === undefined || best.peer.local) return NONE;
  if (multipath.length <= 1) {
    const nh = best.interned.attrs.nextHop;
    return nh === undefined ? NONE : single(nh);
  }
  const set = new Set<string>();
  for (const p of multipath) {
    if (p.peer.local) continue;
    const nh = p.interned.attrs.nextHop;
    if (nh !== undefined) set.add(nh);
  }
  if (set.size <= 1) return set.size === 0 ? NONE : single(set.values().next().value as string);
  return Object.freeze([...set].sort(compareAddress));
}

function keyOf(nextHops: readonly string[]): string {
  return nextHops.length === 1 ? nextHops[0] : nextHops.join(',');
}

export class FibTracker {
  /** prefix -> next hops as last reported (joined with ','; the address itself for one). */
  readonly #reported = new Map<string, string>();

  /** The FibChanges a Loc-RIB change batch amounts to (possibly none). */
  changes(batch: readonly BestChange[]): FibChange[] {
    const out: FibChange[] = [];
    for (const c of batch) {
      const nextHops = learnedNextHops(c.best, c.multipath);
      const prev = this.#reported.get(c.prefix);
      if (nextHops.length === 0) {
        if (prev === undefined) continue;
        this.#reported.delete(c.prefix);
        out.push({ prefix: c.prefix, family: familyOf(c.afiSafi), nextHops });
        continue;
      }
      const key = keyOf(nextHops);
      if (prev === key) continue;
      this.#reported.set(c.prefix, key);
      out.push({ prefix: c.prefix, family: familyOf(c.afiSafi), nextHops });
    }
    return out;
  }

  /** Every learned route of the Loc-RIB, from the RIB's own entries (not from what was reported). */
  static snapshot(entries: (af: AfiSafi) => Iterable<[string, Decision]>): FibChange[] {
    const out: FibChange[] = [];
    for (const af of ['ipv4-unicast', 'ipv6-unicast'] as const) {
      for (const [prefix, d] of entries(af)) {
        const nextHops = learnedNextHops(d.best, d.multipath);
        if (nextHops.length > 0) out.push({ prefix, family: familyOf(af), nextHops });
      }
    }
    return out;
  }

  /** Forget everything (the RIB was rebuilt); returns removals for every reported prefix. */
  reset(): FibChange[] {
    const out: FibChange[] = [];
    for (const prefix of this.#reported.keys()) out.push({ prefix, family: prefix.includes(':') ? 6 : 4, nextHops: NONE });
    this.#reported.clear();
    return out;
  }

  get size(): number {
    return this.#reported.size;
  }
}
