/**
 * The BGP RIB: Adj-RIB-In per peer, Loc-RIB (best path + ECMP set per prefix, with the reason the
 * best won), locally originated routes, graceful-restart stale marking, and a batched change
 * stream. Also the RFC 4456 route reflection rules as pure functions.
 *
 * PURE: no sockets, no timers. Changes accumulate until `flush()`, which hands them to the
 * `onBestChanged` listeners in one batch.
 *
 * Memory: per route one `Path` object (peer, interned attributes, stale flag), referenced from
 * the peer's Adj-RIB-In map and, while it is the only path for its prefix, directly from the
 * Loc-RIB map (no per-destination object until a prefix has two or more paths).
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
  readonly adjIn: Record<AfiSafi, Map<string, Path>>;
}

function perFamily<T>(make: () => T): Record<AfiSafi, T> {
  return { 'ipv4-unicast': make(), 'ipv6-unicast': make() };
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
    this.#peers.set(LOCAL_PEER_ID, { info: this.localPeer, adjIn: perFamily(() => new Map()) });
  }

  addPeer(info: PeerInfo): void {
    if (this.#peers.has(info.peerId)) throw new Error(`peer ${info.peerId} already exists`);
    if (info.local) throw new Error('peers cannot be local');
    this.#peers.set(info.peerId, { info: Object.freeze({ ...info }), adjIn: perFamily(() => new Map()) });
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
    for (const af of AFI_SAFIS) {
      const adjIn = st.adjIn[af];
      adjIn.forEach((p, prefix) => {
        this.#setPath(af, prefix, p, undefined);
        this.attrs.release(p.interned);
      });
      n += adjIn.size;
      adjIn.clear();
    }
    this.#peers.delete(id);
    return n;
  }

  /** Apply one UPDATE's worth of announcements and withdrawals from a peer. */
  update(peer: string | PeerInfo, afiSafi: AfiSafi, announced: readonly Announcement[], withdrawn: readonly string[]): UpdateResult {
    const st = this.#state(peer);
    const adjIn = st.adjIn[afiSafi];
    let nWithdrawn = 0;
    for (const prefix of withdrawn) if (this.#remove(afiSafi, adjIn, prefix)) nWithdrawn++;
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
        this.#remove(afiSafi, adjIn, a.prefix);
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
      const old = adjIn.get(a.prefix);
      if (old !== undefined && old.interned === h) {
        this.attrs.release(h);
        old.stale = false;
        continue;
      }
      const p: Path = { peer: st.info, interned: h, stale: false, fresh: false };
      adjIn.set(a.prefix, p);
      this.#setPath(afiSafi, a.prefix, old, p);
      if (old !== undefined) this.attrs.release(old.interned);
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
      for (const p of st.adjIn[af].values()) {
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
      const emit = (prefix: string, now: LocEntry | undefined): void => {
        if (now === undefined) changes.push({ prefix, afiSafi: af, multipath: [] });
        else if (now instanceof Dest) {
          const d = now.decision;
          changes.push({ prefix, afiSafi: af, best: d.best, multipath: d.multipath, reason: d.reason });
        } else changes.push({ prefix, afiSafi: af, best: now, multipath: [now], reason: 'only-path' });
      };
      pending.forEach((before, prefix) => {
        const now = loc.get(prefix);
        if (!sameSelection(before, now)) emit(prefix, now);
      });
      pending.clear();
      for (const prefix of added) {
        const now = loc.get(prefix);
        // Gone again (nothing to report) or already reported (a repeat in the list).
        if (now === undefined || now.fresh !== true) continue;
        now.fresh = false;
        emit(prefix, now);
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

  locRibSize(afiSafi: AfiSafi): number {
    return this.#loc[afiSafi].size;
  }

  adjRibIn(peer: string | PeerInfo, afiSafi: AfiSafi): ReadonlyMap<string, Path> {
    return this.#state(peer).adjIn[afiSafi];
  }

  #state(peer: string | PeerInfo): PeerState {
    const id = typeof peer === 'string' ? peer : peer.peerId;
    const st = this.#peers.get(id);
    if (st === undefined) throw new Error(`unknown peer ${id}`);
    return st;
  }

  #remove(af: AfiSafi, adjIn: Map<string, Path>, prefix: string): boolean {
    const old = adjIn.get(prefix);
    if (old === undefined) return false;
    adjIn.delete(prefix);
    this.#setPath(af, prefix, old, undefined);
    this.attrs.release(old.interned);
    return true;
  }

  #dropWhere(af: AfiSafi, st: PeerState, pred: (p: Path) => boolean): number {
    const adjIn = st.adjIn[af];
    let n = 0;
    adjIn.forEach((p, prefix) => {
      if (!pred(p)) return;
      adjIn.delete(prefix);
      this.#setPath(af, prefix, p, undefined);
      this.attrs.release(p.interned);
      n++;
    });
    return n;
  }

  /** Replace `old` (if any) with `neu` (if any) among the paths for `prefix`, and re-decide. */
  #setPath(af: AfiSafi, prefix: string, old: Path | undefined, neu: Path | undefined): void {
    const loc = this.#loc[af];
    const cur = loc.get(prefix);
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
