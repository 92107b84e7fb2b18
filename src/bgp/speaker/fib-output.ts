/**
 * Loc-RIB best-path changes -> FibChange for the kernel FIB writer: the writer sees a change only
 * when the next-hop set of a LEARNED route really changed, and a removal (empty nextHops) only for
 * a prefix it was given before (gone from the Loc-RIB, or the best became a locally originated
 * route). Keeps no per-prefix state: each change carries the selection reported before it.
 *
 * PURE: no I/O, no timers, no state. Never reports locally originated routes.
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

function sameNextHops(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The FibChanges a Loc-RIB change batch amounts to (possibly none). Stateless: what was last
 * reported for a prefix is the next-hop set of the selection the previous batch reported, which
 * each BestChange carries as `previous` (every batch reports every prefix whose selection
 * changed, so the two never drift apart; tests/unit/bgp-speaker.test.ts checks it).
 */
export function fibChanges(batch: readonly BestChange[]): FibChange[] {
  const out: FibChange[] = [];
  for (const c of batch) {
    const nextHops = learnedNextHops(c.best, c.multipath);
    const p = c.previous;
    const before = p === undefined ? NONE : learnedNextHops(p.best, p.multipath);
    if (sameNextHops(before, nextHops)) continue;
    out.push({ prefix: c.prefix, family: familyOf(c.afiSafi), nextHops });
  }
  return out;
}

/** Every learned route of `entries` (a Loc-RIB's), as installs. */
export function fibSnapshot(entries: (af: AfiSafi) => Iterable<[string, Decision]>): FibChange[] {
  const out: FibChange[] = [];
  for (const af of ['ipv4-unicast', 'ipv6-unicast'] as const) {
    for (const [prefix, d] of entries(af)) {
      const nextHops = learnedNextHops(d.best, d.multipath);
      if (nextHops.length > 0) out.push({ prefix, family: familyOf(af), nextHops });
    }
  }
  return out;
}

/** Removals for every learned route of `entries` (the Loc-RIB as last reported, being dropped). */
export function fibRemovals(entries: (af: AfiSafi) => Iterable<[string, Decision]>): FibChange[] {
  return fibSnapshot(entries).map((c) => ({ prefix: c.prefix, family: c.family, nextHops: NONE }));
}
