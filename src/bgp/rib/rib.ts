/**
 * The BGP RIB: Adj-RIB-In per peer, Loc-RIB (best path + ECMP set per prefix, with the reason the
 * best won), locally originated routes, graceful-restart stale marking, and a batched change
 * stream. Also the RFC 4456 route reflection rules as pure functions.
 *
 * PURE: no sockets, no timers. Changes accumulate until `flush()`, which hands them to the
 * `onBestChanged` listeners in one batch.
 *
 * Memory: per route one `Path` object (peer, interned attributes, stale flag) and, per prefix,
 * one entry in ONE map per family: prefix -> the Path itself while it is the only one, or a
 * destination object holding every peer's path and the decision. The Adj-RIB-In of a peer is
 * that map filtered by `path.peer` (a peer has at most one path per prefix); per peer only a
 * count is kept, so walking one peer's routes (session down, graceful restart) walks the table,
 * as BIRD does.
 */
import type { AfiSafi, PathAttributes } from '../types.ts';
import { AttrTable, type InternedAttrs } from './attr-intern.ts';
import { decide, type Decision, type Path, type PeerInfo } from './decision.ts';

export type { Path, PeerInfo, Decision } from './decision.ts';

export interface LocalConfig {
  readonly asn: number;
  readonly routerId: string;
  /** RFC 4456 CLUSTER_ID; defaults to the router id. */
  readonly clusterId?: string;
}

export interface RibOptions extends LocalConfig {
  /** Maximum size of the ECMP set (default 8; 1 disables multipath). */
  readonly maxPaths?: number;
}

export interface BestChange {
  readonly prefix: string;
  readonly afiSafi: AfiSafi;
  /** Absent: the prefix is gone from the Loc-RIB. */
  readonly best?: Path;
  readonly multipath: readonly Path[];
  /** Why `best` won ('only-path' when it had no competitor). */
  readonly reason?: string;
  /**
   * The selection the previous batch reported for this prefix (absent: it was not in the
   * Loc-RIB), so that consumers need no per-prefix record of their own.
   */
  readonly previous?: Decision;
}

export interface Announcement {
  readonly prefix: string;
  readonly attrs: PathAttributes;
}

export interface UpdateResult {
  readonly accepted: number;
  readonly withdrawn: number;
  /** Announcements dropped by loop prevention (treated as withdrawals). */
  readonly looped: number;
}

export const AFI_SAFIS: readonly AfiSafi[] = ['ipv4-unicast', 'ipv6-unicast'];
export const LOCAL_PEER_ID = 'local';

export function afiSafiOfPrefix(prefix: string): AfiSafi {
  return prefix.includes(':') ? 'ipv6-unicast' : 'ipv4-unicast';
}

export function clusterIdOf(local: LocalConfig): string {
  return local.clusterId ?? local.routerId;
}

/** Loop prevention on receive; returns the reason to drop, or undefined to accept. */
export function receiveLoop(attrs: PathAttributes, from: PeerInfo, local: LocalConfig): string | undefined {
  if (attrs.originatorId !== undefined && attrs.originatorId === local.routerId) return 'originator-id is ours';
  if (attrs.clusterList !== undefined && attrs.clusterList.includes(clusterIdOf(local))) return 'cluster-list contains our cluster id';
  if (!from.ibgp && attrs.asPath !== undefined) {
    for (const s of attrs.asPath) if (s.asns.includes(local.asn)) return 'as-path contains our AS';
  }
  return undefined;
}

/** What export rules need to know about the receiving side (a peer, or an update group). */
export interface ExportTarget {
  readonly ibgp: boolean;
  readonly isReflectorClient: boolean;
  /** Known for a single peer; absent for a group (split horizon is then up to the receiver). */
  readonly peerId?: string;
  readonly routerId?: string;
}

/**
 * RFC 4456 section 6 export rules (plus split horizon):
 * - never back to the peer the path came from;
 * - locally originated and eBGP-learned paths: to everyone;
 * - iBGP-learned, to eBGP: allowed;
 * - iBGP-learned from a client: to all iBGP peers (clients and non-clients) except the originator;
 * - iBGP-learned from a non-client: only to clients (so with no clients, i.e. not a reflector,
 *   iBGP-learned paths are never sent to iBGP peers).
 */
export function exportAllowed(path: Path, toPeer: ExportTarget, local: LocalConfig): boolean {
  void local;
  const from = path.peer;
  if (toPeer.peerId !== undefined && from.peerId === toPeer.peerId) return false;
  if (from.local || !from.ibgp || !toPeer.ibgp) return true;
  if (from.isReflectorClient) {
    const originator = path.interned.attrs.originatorId ?? from.routerId;
    return toPeer.routerId === undefined || toPeer.routerId !== originator;
  }
  return toPeer.isReflectorClient;
}

/** Attributes of an iBGP-learned path reflected by us (RFC 4456 section 8). */
export function reflectAttributes(attrs: PathAttributes, fromPeer: PeerInfo, local: LocalConfig): PathAttributes {
  return {
    ...attrs,
    originatorId: attrs.originatorId ?? fromPeer.routerId,
    clusterList: [clusterIdOf(local), ...(attrs.clusterList ?? [])],
  };
}

/** A Loc-RIB destination with two or more paths. */
class Dest {
  readonly paths: readonly Path[];
  readonly decision: Decision;
  /** Absent from the Loc-RIB when the current batch began (the prefix is in `#added`). */
  fresh = false;
  constructor(paths: readonly Path[], decision: Decision) {
    this.paths = paths;
    this.decision = decision;
  }
}

type LocEntry = Path | Dest;

interface PeerState {
  readonly info: PeerInfo;
  /** Adj-RIB-In size per family (its paths live in the Loc-RIB map). */
  readonly count: Record<AfiSafi, number>;
}

const NO_PATHS: readonly Path[] = Object.freeze([]);

function perFamily<T>(make: () => T): Record<AfiSafi, T> {
  return { 'ipv4-unicast': make(), 'ipv6-unicast': make() };
}

/** The path `peer` holds in entry `e`, if any. */
function pathOf(e: LocEntry | undefined, peer: PeerInfo): Path | undefined {
  if (e === undefined) return undefined;
  if (!(e instanceof Dest)) return e.peer === peer ? e : undefined;
  for (const p of e.paths) if (p.peer === peer) return p;
  return undefined;
}

function decisionOf(e: LocEntry): Decision {
  return e instanceof Dest ? e.decision : { best: e, multipath: [e], reason: 'only-path' };
}

function sameSelection(a: LocEntry | undefined, b: LocEntry | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined) return false;
  const da = decisionOf(a);
  const db = decisionOf(b);
  if (da.best !== db.best || da.multipath.length !== db.multipath.length) return false;
  for (let i = 0; i < da.multipath.length; i++) if (da.multipath[i] !== db.multipath[i]) return false;
  return true;
}

export class Rib {
  readonly attrs = new AttrTable();
  readonly local: LocalConfig;
  readonly maxPaths: number;
  readonly localPeer: PeerInfo;
  readonly #peers = new Map<string, PeerState>();
  readonly #loc = perFamily(() => new Map<string, LocEntry>());
  /**
   * Change batching. `#pending`: prefix -> Loc-RIB entry at the start of the batch, for prefixes
   * that had one. `#added`: prefixes that had none (may repeat); their current entry is marked
   * `fresh`, so a bulk load of new prefixes costs an array push, not a map insertion.
   */
  readonly #pending = perFamily(() => new Map<string, LocEntry>());
  readonly #added = perFamily((): string[] => []);
  readonly #listeners: Array<(changes: BestChange[]) => void> = [];

  constructor(opts: RibOptions) {
    this.local = { asn: opts.asn, routerId: opts.routerId, clusterId: opts.clusterId };
    this.maxPaths = Math.max(1, opts.maxPaths ?? 8);
    this.localPeer = Object.freeze({
      peerId: LOCAL_PEER_ID,
      address: '0.0.0.0',
      asn: opts.asn,
      ibgp: false,
      routerId: opts.routerId,
      isReflectorClient: false,
      local: true,
    });
    this.#peers.set(LOCAL_PEER_ID, { info: this.localPeer, count: perFamily(() => 0) });
  }

  addPeer(info: PeerInfo): void {
    if (this.#peers.has(info.peerId)) throw new Error(`peer ${info.peerId} already exists`);
    if (info.local) throw new Error('peers cannot be local');
    this.#peers.set(info.peerId, { info: Object.freeze({ ...info }), count: perFamily(() => 0) });
  }

  peer(peerId: string): PeerInfo | undefined {
    return this.#peers.get(peerId)?.info;
  }

  /** Remove a peer and withdraw all its paths. Returns the number of paths withdrawn. */
  removePeer(peer: string | PeerInfo): number {
    const id = typeof peer === 'string' ? peer : peer.peerId;
    if (id === LOCAL_PEER_ID) throw new Error('cannot remove the local pseudo-peer');
    const st = this.#peers.get(id);
    if (st === undefined) return 0;
    let n = 0;
    for (const af of AFI_SAFIS) n += this.#dropWhere(af, st, () => true);
    this.#peers.delete(id);
    return n;
  }

  /** Apply one UPDATE's worth of announcements and withdrawals from a peer. */
  update(peer: string | PeerInfo, afiSafi: AfiSafi, announced: readonly Announcement[], withdrawn: readonly string[]): UpdateResult {
    const st = this.#state(peer);
    const loc = this.#loc[afiSafi];
    let nWithdrawn = 0;
    for (const prefix of withdrawn) if (this.#remove(afiSafi, st, prefix)) nWithdrawn++;
    let accepted = 0;
    let looped = 0;
    // Consecutive announcements usually share one attributes object: look it up once.
    let lastIn: PathAttributes | undefined;
    let lastH: InternedAttrs | undefined;
    let lastLoop = false;
    for (const a of announced) {
      if (a.attrs !== lastIn) {
        lastIn = a.attrs;
        lastLoop = st.info.local ? false : receiveLoop(a.attrs, st.info, this.local) !== undefined;
        lastH = undefined;
      }
      if (lastLoop) {
        looped++;
        this.#remove(afiSafi, st, a.prefix);
        continue;
      }
      let h: InternedAttrs;
      if (lastH !== undefined && lastH.refs > 0) {
        h = lastH;
        this.attrs.retain(h);
      } else {
        h = lastH = this.attrs.intern(a.attrs);
      }
      accepted++;
      const cur = loc.get(a.prefix);
      const old = pathOf(cur, st.info);
      if (old !== undefined && old.interned === h) {
        this.attrs.release(h);
        old.stale = false;
        continue;
      }
      const p: Path = { peer: st.info, interned: h, stale: false, fresh: false };
      this.#setPath(afiSafi, a.prefix, cur, old, p);
      if (old !== undefined) this.attrs.release(old.interned);
      else st.count[afiSafi]++;
    }
    return { accepted, withdrawn: nWithdrawn, looped };
  }

  /** Originate a local route (e.g. a workload /32). The family follows from the prefix. */
  originate(prefix: string, attrs: PathAttributes): void {
    this.update(LOCAL_PEER_ID, afiSafiOfPrefix(prefix), [{ prefix, attrs }], []);
  }

  withdrawLocal(prefix: string): boolean {
    return this.update(LOCAL_PEER_ID, afiSafiOfPrefix(prefix), [], [prefix]).withdrawn > 0;
  }

  /** Graceful restart (RFC 4724): the session went down; keep its paths, marked stale. */
  markStale(peer: string | PeerInfo, afiSafi?: AfiSafi): number {
    const st = this.#state(peer);
    let n = 0;
    for (const af of afiSafi === undefined ? AFI_SAFIS : [afiSafi]) {
      if (st.count[af] === 0) continue;
      for (const e of this.#loc[af].values()) {
        const p = pathOf(e, st.info);
        if (p === undefined) continue;
        p.stale = true;
        n++;
      }
    }
    return n;
  }

  /** End-of-RIB (or restart timer expiry): drop the paths that were not refreshed. */
  sweepStale(peer: string | PeerInfo, afiSafi?: AfiSafi): number {
    const st = this.#state(peer);
    let n = 0;
    for (const af of afiSafi === undefined ? AFI_SAFIS : [afiSafi]) n += this.#dropWhere(af, st, (p) => p.stale);
    return n;
  }

  onBestChanged(listener: (changes: BestChange[]) => void): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  /** Emit the pending best-path changes as one batch (nothing if none). Returns the batch. */
  flush(): BestChange[] {
    const changes: BestChange[] = [];
    for (const af of AFI_SAFIS) {
      const pending = this.#pending[af];
      const added = this.#added[af];
      if (pending.size === 0 && added.length === 0) continue;
      const loc = this.#loc[af];
      const emit = (prefix: string, now: LocEntry | undefined, previous: Decision | undefined): void => {
        if (now === undefined) changes.push({ prefix, afiSafi: af, multipath: NO_PATHS, previous });
        else if (now instanceof Dest) {
          const d = now.decision;
          changes.push({ prefix, afiSafi: af, best: d.best, multipath: d.multipath, reason: d.reason, previous });
        } else changes.push({ prefix, afiSafi: af, best: now, multipath: [now], reason: 'only-path', previous });
      };
      pending.forEach((before, prefix) => {
        const now = loc.get(prefix);
        if (!sameSelection(before, now)) emit(prefix, now, decisionOf(before));
      });
      pending.clear();
      for (const prefix of added) {
        const now = loc.get(prefix);
        // Gone again (nothing to report) or already reported (a repeat in the list).
        if (now === undefined || now.fresh !== true) continue;
        now.fresh = false;
        emit(prefix, now, undefined);
      }
      added.length = 0;
    }
    if (changes.length > 0) for (const l of [...this.#listeners]) l(changes);
    return changes;
  }

  /** The Loc-RIB selection for a prefix. */
  best(afiSafi: AfiSafi, prefix: string): Decision | undefined {
    const e = this.#loc[afiSafi].get(prefix);
    return e === undefined ? undefined : decisionOf(e);
  }

  /** All paths (from all peers) for a prefix. */
  paths(afiSafi: AfiSafi, prefix: string): readonly Path[] {
    const e = this.#loc[afiSafi].get(prefix);
    return e === undefined ? [] : e instanceof Dest ? e.paths : [e];
  }

  *entries(afiSafi: AfiSafi): IterableIterator<[string, Decision]> {
    for (const [prefix, e] of this.#loc[afiSafi]) yield [prefix, decisionOf(e)];
  }

  /** The Loc-RIB as the last flush reported it (without the changes of the current batch). */
  *flushedEntries(afiSafi: AfiSafi): IterableIterator<[string, Decision]> {
    const pending = this.#pending[afiSafi];
    const loc = this.#loc[afiSafi];
    for (const [prefix, e] of loc) {
      const before = pending.size === 0 ? undefined : pending.get(prefix);
      if (before !== undefined) yield [prefix, decisionOf(before)];
      else if (e.fresh !== true) yield [prefix, decisionOf(e)];
    }
    for (const [prefix, before] of pending) if (!loc.has(prefix)) yield [prefix, decisionOf(before)];
  }

  locRibSize(afiSafi: AfiSafi): number {
    return this.#loc[afiSafi].size;
  }

  /** A copy of a peer's Adj-RIB-In (a walk of the Loc-RIB: for tests and diagnostics). */
  adjRibIn(peer: string | PeerInfo, afiSafi: AfiSafi): ReadonlyMap<string, Path> {
    const st = this.#state(peer);
    const out = new Map<string, Path>();
    if (st.count[afiSafi] === 0) return out;
    this.#loc[afiSafi].forEach((e, prefix) => {
      const p = pathOf(e, st.info);
      if (p !== undefined) out.set(prefix, p);
    });
    return out;
  }

  /** Number of paths in a peer's Adj-RIB-In (O(1)). */
  adjRibInSize(peer: string | PeerInfo, afiSafi: AfiSafi): number {
    return this.#state(peer).count[afiSafi];
  }

  #state(peer: string | PeerInfo): PeerState {
    const id = typeof peer === 'string' ? peer : peer.peerId;
    const st = this.#peers.get(id);
    if (st === undefined) throw new Error(`unknown peer ${id}`);
    return st;
  }

  #remove(af: AfiSafi, st: PeerState, prefix: string): boolean {
    const cur = this.#loc[af].get(prefix);
    const old = pathOf(cur, st.info);
    if (old === undefined) return false;
    st.count[af]--;
    this.#setPath(af, prefix, cur, old, undefined);
    this.attrs.release(old.interned);
    return true;
  }

  /** Remove the peer's paths that match `pred` (a walk of the Loc-RIB). */
  #dropWhere(af: AfiSafi, st: PeerState, pred: (p: Path) => boolean): number {
    if (st.count[af] === 0) return 0;
    let n = 0;
    // Map iteration visits each prefix once even though #setPath replaces or deletes the
    // entry being visited (and only that one).
    this.#loc[af].forEach((e, prefix) => {
      const p = pathOf(e, st.info);
      if (p === undefined || !pred(p)) return;
      st.count[af]--;
      this.#setPath(af, prefix, e, p, undefined);
      this.attrs.release(p.interned);
      n++;
    });
    return n;
  }

  /**
   * Replace `old` (if any) with `neu` (if any) among the paths for `prefix`, whose Loc-RIB entry
   * is `cur`, and re-decide.
   */
  #setPath(af: AfiSafi, prefix: string, cur: LocEntry | undefined, old: Path | undefined, neu: Path | undefined): void {
    const loc = this.#loc[af];
    const pending = this.#pending[af];
    let fresh: boolean;
    if (cur !== undefined) {
      fresh = cur.fresh === true;
      if (!fresh && (pending.size === 0 || !pending.has(prefix))) pending.set(prefix, cur);
    } else if (pending.size !== 0 && pending.has(prefix)) {
      fresh = false; // had an entry when the batch began; recorded
    } else {
      fresh = true; // no entry when the batch began (or added and removed within it)
      if (neu === undefined) return;
      this.#added[af].push(prefix);
    }
    // Fast paths: a prefix with at most one path needs no decision.
    if (cur === undefined || cur === old) {
      if (neu === undefined) loc.delete(prefix);
      else {
        neu.fresh = fresh;
        loc.set(prefix, neu);
      }
      return;
    }
    let paths: Path[];
    if (cur === undefined) paths = [];
    else if (cur instanceof Dest) paths = cur.paths.filter((p) => p !== old);
    else paths = cur === old ? [] : [cur];
    if (neu !== undefined) paths.push(neu);
    let e: LocEntry;
    if (paths.length === 0) {
      loc.delete(prefix);
      return;
    } else if (paths.length === 1) e = paths[0];
    else e = new Dest(paths, decide(paths, this.maxPaths)!);
    e.fresh = fresh;
    loc.set(prefix, e);
  }
}
