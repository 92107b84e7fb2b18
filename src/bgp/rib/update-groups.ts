/**
 * Adj-RIB-Out by update group (FRR update groups, BIRD buckets): peers with the same export
 * policy share one group; from Loc-RIB change batches the group computes, per outgoing attribute
 * set, the prefixes to announce, plus the withdrawals. The caller encodes each batch ONCE
 * (codec `packUpdates`) and writes the same bytes to every peer of the group.
 *
 * Split horizon inside a group: a group is shared by peers, so a path is not held back from the
 * peer it came from; that peer drops it by its own loop detection (AS_PATH for eBGP,
 * ORIGINATOR_ID for reflector clients), as FRR does. `exportAllowed` with a peerId is the strict
 * per-peer rule for callers that do not use groups.
 *
 * PURE: no I/O, no timers.
 */
import type { AfiSafi, AsPathSegment, Nlri, PathAttributes } from '../types.ts';
import { AttrTable, type InternedAttrs } from './attr-intern.ts';
import { DEFAULT_LOCAL_PREF, type Path } from './decision.ts';
import { AFI_SAFIS, exportAllowed, reflectAttributes, type BestChange, type ExportTarget, type LocalConfig, type Rib } from './rib.ts';

export type GroupKind = 'ibgp-client' | 'ibgp-nonclient' | 'ebgp';

export interface GroupPolicy {
  readonly kind: GroupKind;
  /** Our next-hop addresses for next-hop-self. */
  readonly nextHopSelf: { readonly ipv4?: string; readonly ipv6?: string };
  /**
   * Keep the received next hop even towards eBGP (route-server / reflector style). Locally
   * originated routes still get next-hop-self unless they carry their own next hop.
   */
  readonly keepOriginalNextHop?: boolean;
}

export interface UpdateBatch {
  readonly afiSafi: AfiSafi;
  readonly attributes: PathAttributes;
  readonly nlri: Nlri[];
  readonly withdrawn: Nlri[];
  /** IPv6: the global next hop for MP_REACH_NLRI (same as attributes.nextHop). */
  readonly nextHop?: string;
}

export interface GroupOutput {
  readonly group: UpdateGroup;
  readonly peers: readonly string[];
  readonly batches: UpdateBatch[];
}

export function groupKey(p: GroupPolicy): string {
  return `${p.kind}|${p.keepOriginalNextHop ? 'keep' : 'self'}|${p.nextHopSelf.ipv4 ?? ''}|${p.nextHopSelf.ipv6 ?? ''}`;
}

function prependAs(asn: number, segs: readonly AsPathSegment[] | undefined): AsPathSegment[] {
  const s = segs ?? [];
  const first = s[0];
  if (first !== undefined && first.type === 'sequence' && first.asns.length < 255) {
    return [{ type: 'sequence', asns: [asn, ...first.asns] }, ...s.slice(1)];
  }
  return [{ type: 'sequence', asns: [asn] }, ...s];
}

/** The attributes a group of kind `policy.kind` receives for `path` (before next-hop handling is cached). */
export function exportAttributes(path: Path, policy: GroupPolicy, local: LocalConfig, afiSafi: AfiSafi): PathAttributes {
  const a = path.interned.attrs;
  const from = path.peer;
  let out: { -readonly [K in keyof PathAttributes]: PathAttributes[K] };
  if (policy.kind === 'ebgp') {
    out = { ...a, asPath: prependAs(local.asn, a.asPath) };
    delete out.localPref;
    delete out.originatorId;
    delete out.clusterList;
    // RFC 4271 5.1.4: a MED learned from another AS is not passed on to other ASes.
    if (!from.local) delete out.med;
  } else {
    out = from.ibgp && !from.local ? { ...reflectAttributes(a, from, local) } : { ...a };
    if (out.localPref === undefined) out.localPref = DEFAULT_LOCAL_PREF;
  }
  const self = afiSafi === 'ipv6-unicast' ? policy.nextHopSelf.ipv6 : policy.nextHopSelf.ipv4;
  const nhSelf = from.local ? !(policy.keepOriginalNextHop && a.nextHop !== undefined) : policy.kind === 'ebgp' && !policy.keepOriginalNextHop;
  if (nhSelf && self !== undefined) out.nextHop = self;
  return out;
}

export class UpdateGroup {
  readonly id: number;
  readonly key: string;
  readonly policy: GroupPolicy;
  readonly peers = new Set<string>();
  /** Adj-RIB-Out: prefix -> the (group-interned) attribute set advertised. */
  readonly adjOut: Record<AfiSafi, Map<string, InternedAttrs>> = { 'ipv4-unicast': new Map(), 'ipv6-unicast': new Map() };
  readonly attrs = new AttrTable();
  readonly #target: ExportTarget;

  constructor(id: number, policy: GroupPolicy) {
    this.id = id;
    this.key = groupKey(policy);
    this.policy = policy;
    this.#target = { ibgp: policy.kind !== 'ebgp', isReflectorClient: policy.kind === 'ibgp-client' };
  }

  /**
   * Apply Loc-RIB changes to this group's Adj-RIB-Out; returns the batches to send (withdrawals
   * first, then one batch per outgoing attribute set and family).
   */
  apply(changes: readonly BestChange[], local: LocalConfig): UpdateBatch[] {
    // (input attribute id, source peer) -> outgoing set, for this call only.
    const cache = new Map<string, InternedAttrs>();
    const announce = new Map<InternedAttrs, { afiSafi: AfiSafi; nlri: Nlri[] }>();
    const withdrawn: Record<AfiSafi, Nlri[]> = { 'ipv4-unicast': [], 'ipv6-unicast': [] };
    for (const c of changes) {
      const out = this.adjOut[c.afiSafi];
      const prev = out.get(c.prefix);
      if (c.best !== undefined && exportAllowed(c.best, this.#target, local)) {
        const ck = `${c.afiSafi}|${c.best.interned.id}|${c.best.peer.peerId}`;
        let h = cache.get(ck);
        if (h === undefined) {
          h = this.attrs.intern(exportAttributes(c.best, this.policy, local, c.afiSafi), 0);
          cache.set(ck, h);
        }
        if (prev === h) continue;
        this.attrs.retain(h);
        out.set(c.prefix, h);
        if (prev !== undefined) this.attrs.release(prev);
        let b = announce.get(h);
        if (b === undefined) announce.set(h, (b = { afiSafi: c.afiSafi, nlri: [] }));
        b.nlri.push({ prefix: c.prefix });
      } else if (prev !== undefined) {
        out.delete(c.prefix);
        this.attrs.release(prev);
        withdrawn[c.afiSafi].push({ prefix: c.prefix });
      }
    }
    for (const h of cache.values()) this.attrs.sweep(h);
    const batches: UpdateBatch[] = [];
    for (const af of AFI_SAFIS) if (withdrawn[af].length > 0) batches.push({ afiSafi: af, attributes: {}, nlri: [], withdrawn: withdrawn[af] });
    for (const [h, b] of announce) batches.push(batchOf(b.afiSafi, h.attrs, b.nlri));
    return batches;
  }

  /** The full Adj-RIB-Out as batches (for a peer joining the group). */
  dump(): UpdateBatch[] {
    const batches: UpdateBatch[] = [];
    for (const af of AFI_SAFIS) {
      const by = new Map<InternedAttrs, Nlri[]>();
      for (const [prefix, h] of this.adjOut[af]) {
        let l = by.get(h);
        if (l === undefined) by.set(h, (l = []));
        l.push({ prefix });
      }
      for (const [h, nlri] of by) batches.push(batchOf(af, h.attrs, nlri));
    }
    return batches;
  }
}

function batchOf(afiSafi: AfiSafi, attributes: PathAttributes, nlri: Nlri[]): UpdateBatch {
  return afiSafi === 'ipv6-unicast' && attributes.nextHop !== undefined
    ? { afiSafi, attributes, nlri, withdrawn: [], nextHop: attributes.nextHop }
    : { afiSafi, attributes, nlri, withdrawn: [] };
}

export class UpdateGroups {
  readonly #rib: Rib;
  readonly #groups = new Map<string, UpdateGroup>();
  readonly #peerGroup = new Map<string, UpdateGroup>();
  #nextId = 1;

  constructor(rib: Rib) {
    this.#rib = rib;
  }

  /**
   * Add a peer to the group for `policy` (created, and filled from the Loc-RIB, if new).
   * Returns the group and the full table dump to send to this peer only.
   */
  join(peerId: string, policy: GroupPolicy): { group: UpdateGroup; dump: UpdateBatch[] } {
    if (this.#peerGroup.has(peerId)) throw new Error(`peer ${peerId} is already in an update group`);
    const key = groupKey(policy);
    let g = this.#groups.get(key);
    if (g === undefined) {
      g = new UpdateGroup(this.#nextId++, policy);
      this.#groups.set(key, g);
      const all: BestChange[] = [];
      for (const af of AFI_SAFIS) {
        for (const [prefix, d] of this.#rib.entries(af)) all.push({ prefix, afiSafi: af, best: d.best, multipath: d.multipath, reason: d.reason });
      }
      g.apply(all, this.#rib.local);
    }
    g.peers.add(peerId);
    this.#peerGroup.set(peerId, g);
    return { group: g, dump: g.dump() };
  }

  /** Remove a peer; its group goes away with its last peer. */
  leave(peerId: string): void {
    const g = this.#peerGroup.get(peerId);
    if (g === undefined) return;
    this.#peerGroup.delete(peerId);
    g.peers.delete(peerId);
    if (g.peers.size === 0) this.#groups.delete(g.key);
  }

  groupOf(peerId: string): UpdateGroup | undefined {
    return this.#peerGroup.get(peerId);
  }

  get groups(): readonly UpdateGroup[] {
    return [...this.#groups.values()];
  }

  /** Feed one Loc-RIB change batch (from `Rib.onBestChanged`) to every group. */
  process(changes: readonly BestChange[]): GroupOutput[] {
    const out: GroupOutput[] = [];
    for (const g of this.#groups.values()) {
      const batches = g.apply(changes, this.#rib.local);
      if (batches.length > 0) out.push({ group: g, peers: [...g.peers], batches });
    }
    return out;
  }
}
