/**
 * The RFC 4271 section 9.1.2 decision process as an ordered list of pure comparators, each
 * naming the reason it decides (GoBGP `internal/pkg/table/destination.go`).
 *
 * Selection is done by elimination (RFC 4271 9.1.2.2): at each step, drop every candidate that
 * another candidate beats on that comparator. This makes the result independent of the order
 * paths arrived, even though the MED step is not transitive (it only compares paths from the
 * same neighbouring AS). The reason recorded is the step that left a single candidate.
 */
import type { AsPathSegment, PathAttributes } from '../types.ts';
import type { InternedAttrs } from './attr-intern.ts';

export interface PeerInfo {
  readonly peerId: string;
  readonly address: string;
  readonly asn: number;
  readonly ibgp: boolean;
  readonly routerId: string;
  readonly isReflectorClient: boolean;
  /** The pseudo-peer for locally originated routes. */
  readonly local?: boolean;
}

/** One path: the only per-route object the RIB keeps. */
export interface Path {
  readonly peer: PeerInfo;
  readonly interned: InternedAttrs;
  /** Graceful restart: retained from a restarting peer, not yet refreshed. */
  stale: boolean;
  /** Rib bookkeeping (change batching); meaningless outside the Rib. */
  fresh?: boolean;
}

/** Negative: a is better; positive: b is better; 0: this step does not decide. */
export interface Comparator {
  readonly reason: string;
  readonly compare: (a: Path, b: Path) => number;
}

export const DEFAULT_LOCAL_PREF = 100;

export function asPathLength(segs: readonly AsPathSegment[] | undefined): number {
  if (segs === undefined) return 0;
  let n = 0;
  for (const s of segs) {
    if (s.type === 'sequence') n += s.asns.length;
    else if (s.type === 'set') n += 1; // RFC 4271 9.1.2.2 a)
    // confed segments do not count (RFC 5065 5.3)
  }
  return n;
}

/** The neighbouring AS (RFC 4271 9.1.2.2 c): first AS of the path; 0 for an empty path (our own AS). */
export function neighbourAs(a: PathAttributes): number {
  const segs = a.asPath;
  if (segs === undefined) return 0;
  for (const s of segs) {
    if (s.type === 'confed-sequence' || s.type === 'confed-set') continue;
    if (s.type === 'sequence' && s.asns.length > 0) return s.asns[0];
    return 0;
  }
  return 0;
}

function ipv4Num(s: string): number {
  const p = s.split('.');
  if (p.length !== 4) return -1;
  return ((+p[0] << 24) >>> 0) + (+p[1] << 16) + (+p[2] << 8) + +p[3];
}

/** 8 x 16-bit groups of an IPv6 address (handles `::` and a dotted IPv4 tail). */
function ipv6Groups(s: string): number[] {
  let str = s;
  if (str.includes('.')) {
    const colon = str.lastIndexOf(':');
    const v4 = ipv4Num(str.slice(colon + 1));
    str = str.slice(0, colon + 1) + (v4 >>> 16).toString(16) + ':' + (v4 & 0xffff).toString(16);
  }
  const [head, rest] = str.split('::');
  const h = head === '' ? [] : head.split(':').map((x) => parseInt(x, 16));
  if (rest === undefined) return h;
  const r = rest === '' ? [] : rest.split(':').map((x) => parseInt(x, 16));
  return [...h, ...new Array<number>(Math.max(0, 8 - h.length - r.length)).fill(0), ...r];
}

/** Numeric address order: IPv4 before IPv6. */
export function compareAddress(a: string, b: string): number {
  if (a === b) return 0;
  const a6 = a.includes(':');
  const b6 = b.includes(':');
  if (a6 !== b6) return a6 ? 1 : -1;
  if (!a6) return ipv4Num(a) - ipv4Num(b);
  const ga = ipv6Groups(a);
  const gb = ipv6Groups(b);
  for (let i = 0; i < 8; i++) if (ga[i] !== gb[i]) return ga[i] - gb[i];
  return 0;
}

const attrs = (p: Path): PathAttributes => p.interned.attrs;

export const COMPARATORS: readonly Comparator[] = [
  {
    // Calico-style: a route this node originates (a local workload) beats any learned one.
    reason: 'locally-originated',
    compare: (a, b) => (b.peer.local ? 1 : 0) - (a.peer.local ? 1 : 0),
  },
  {
    reason: 'local-pref',
    compare: (a, b) => (attrs(b).localPref ?? DEFAULT_LOCAL_PREF) - (attrs(a).localPref ?? DEFAULT_LOCAL_PREF),
  },
  {
    reason: 'as-path-length',
    compare: (a, b) => asPathLength(attrs(a).asPath) - asPathLength(attrs(b).asPath),
  },
  {
    // A missing ORIGIN (malformed) sorts as INCOMPLETE.
    reason: 'origin',
    compare: (a, b) => (attrs(a).origin ?? 2) - (attrs(b).origin ?? 2),
  },
  {
    reason: 'med',
    compare: (a, b) => (neighbourAs(attrs(a)) === neighbourAs(attrs(b)) ? (attrs(a).med ?? 0) - (attrs(b).med ?? 0) : 0),
  },
  {
    reason: 'ebgp-over-ibgp',
    compare: (a, b) => (a.peer.ibgp ? 1 : 0) - (b.peer.ibgp ? 1 : 0),
  },
  // (IGP metric to the next hop: skipped; routecat has no IGP.)
  {
    // RFC 4456 9: ORIGINATOR_ID stands in for the BGP identifier.
    reason: 'router-id',
    compare: (a, b) => compareAddress(attrs(a).originatorId ?? a.peer.routerId, attrs(b).originatorId ?? b.peer.routerId),
  },
  {
    reason: 'cluster-list-length',
    compare: (a, b) => (attrs(a).clusterList?.length ?? 0) - (attrs(b).clusterList?.length ?? 0),
  },
  {
    reason: 'peer-address',
    compare: (a, b) => compareAddress(a.peer.address, b.peer.address),
  },
  {
    // Not in the RFC: makes the order total when two sessions share an address.
    reason: 'peer-id',
    compare: (a, b) => (a.peer.peerId < b.peer.peerId ? -1 : a.peer.peerId > b.peer.peerId ? 1 : 0),
  },
];

/** Index of the last comparator that belongs to the multipath (ECMP) equality. */
const MULTIPATH_LAST = COMPARATORS.findIndex((c) => c.reason === 'ebgp-over-ibgp');

/** Pairwise: which of two paths wins, and why. */
export function comparePaths(a: Path, b: Path): { winner: Path; reason: string } {
  for (const c of COMPARATORS) {
    const r = c.compare(a, b);
    if (r !== 0) return { winner: r < 0 ? a : b, reason: c.reason };
  }
  return { winner: a, reason: 'equal' };
}

/** Equal on every step up to and including eBGP-over-iBGP: candidates for ECMP. */
export function multipathEqual(a: Path, b: Path): boolean {
  for (let i = 0; i <= MULTIPATH_LAST; i++) if (COMPARATORS[i].compare(a, b) !== 0) return false;
  return true;
}

export interface Decision {
  readonly best: Path;
  /** ECMP set, best first, at most `maxPaths`. */
  readonly multipath: readonly Path[];
  /** The step that left the best alone ('only-path' when there was one candidate). */
  readonly reason: string;
}

function eliminate(cands: Path[], c: Comparator): Path[] {
  const out: Path[] = [];
  for (const p of cands) {
    let beaten = false;
    for (const q of cands) {
      if (q !== p && c.compare(q, p) < 0) {
        beaten = true;
        break;
      }
    }
    if (!beaten) out.push(p);
  }
  return out;
}

/** Select the best path and the ECMP set from `paths` (any order; result does not depend on it). */
export function decide(paths: readonly Path[], maxPaths = 1): Decision | undefined {
  if (paths.length === 0) return undefined;
  if (paths.length === 1) return { best: paths[0], multipath: [paths[0]], reason: 'only-path' };
  let cands = [...paths];
  let reason = 'equal';
  let ecmp: Path[] = [];
  for (let i = 0; i < COMPARATORS.length; i++) {
    if (cands.length > 1) {
      cands = eliminate(cands, COMPARATORS[i]);
      if (cands.length === 1) reason = COMPARATORS[i].reason;
    }
    if (i === MULTIPATH_LAST) ecmp = cands;
  }
  const best = cands[0];
  if (maxPaths <= 1 || ecmp.length <= 1) return { best, multipath: [best], reason };
  // The ECMP survivors differ only on the later, total-order steps: sort by them.
  const rest = COMPARATORS.slice(MULTIPATH_LAST + 1);
  const sorted = [...ecmp].sort((a, b) => {
    for (const c of rest) {
      const r = c.compare(a, b);
      if (r !== 0) return r;
    }
    return 0;
  });
  return { best, multipath: sorted.slice(0, maxPaths), reason };
}
