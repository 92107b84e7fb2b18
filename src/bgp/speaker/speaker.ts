/**
 * DOC: BgpSpeaker, the composition root of routecat's BGP: one BgpSession per configured peer,
 * the listener that hands incoming connections to them, the RIB (Adj-RIB-In, Loc-RIB, local
 * routes), the update groups that turn Loc-RIB changes into UPDATEs encoded once per group, the
 * graceful-restart helper role (RFC 4724 receiving side), route refresh (RFC 2918/7313) and the
 * FIB output for the kernel writer. Implements the contract in ../speaker-api.ts.
 *
 * Flow: session 'update' -> Rib.update (no flush) -> one Rib.flush per event-loop turn
 * (setImmediate) -> BestChange batch -> fibChanges (onFib listeners) and UpdateGroups.process ->
 * the same Buffers written to every writable peer of each group. A peer whose socket is full is
 * not queued for: the prefixes of the batches it missed go to its `dirty` set, and on 'drain' it
 * is sent the group's CURRENT Adj-RIB-Out for them (coalescing; bounded by the table size). Table
 * dumps (on Established, on ROUTE-REFRESH) read the group's Adj-RIB-Out in chunks the same way.
 *
 * Never touches the kernel, never throws out of a socket or timer callback: one peer's bad input
 * ends only that peer's session (the codec/session do that) and handler exceptions are logged.
 */
import type { Socket } from 'node:net';
import { setImmediate, clearImmediate } from 'node:timers';
import ipaddr from 'ipaddr.js';
import type { FibChange, PeerState, PeerStatus, Speaker, SpeakerConfig, SpeakerPeerConfig, SpeakerStatus } from '../speaker-api.ts';
import type { AfiSafi, Nlri, PathAttributes, RouteRefreshMessage, UpdateMessage } from '../types.ts';
import { encodeMessage, endOfRib, endOfRibFamily, CeaseSubcode, ErrorCode } from '../codec/index.ts';
import type { Negotiated } from '../codec/capabilities.ts';
import { BgpSession, type DownInfo, type EstablishedInfo } from '../session/session.ts';
import { AFI_SAFIS, LOCAL_PEER_ID, Rib, afiSafiOfPrefix, type Announcement, type BestChange } from '../rib/rib.ts';
import type { InternedAttrs } from '../rib/attr-intern.ts';
import { UpdateGroups, type GroupOutput, type UpdateBatch, type UpdateGroup } from '../rib/update-groups.ts';
import { logger, type Logger } from '../../log.ts';
import { BatchEncoder, encodeBatch } from './batch-encoder.ts';
import { fibChanges, fibRemovals, fibSnapshot } from './fib-output.ts';
import { Listener, plainAddress, type Acceptor } from './listener.ts';
import {
  DEFAULT_MAX_RESTART_TIME_SEC,
  capabilitiesOf,
  groupPolicyOf,
  identityChanged,
  listenChanged,
  localAttributes,
  localAttributesChanged,
  nextHopChanged,
  ribPeerInfo,
  samePeerConfig,
} from './peer-config.ts';

/** Prefixes per UPDATE-building step of a dump or a dirty catch-up (a few UPDATEs of /32s). */
const CHUNK = 2048;
/** Steps per pump call before yielding to the event loop. */
const PUMP_STEPS = 32;
const NO_ANNOUNCEMENTS: readonly Announcement[] = [];

type Job =
  | { readonly kind: 'dump'; readonly af: AfiSafi; readonly initial: boolean; iter?: Iterator<[string, InternedAttrs]> }
  | { readonly kind: 'eor' | 'borr' | 'eorr'; readonly af: AfiSafi };

interface Peer {
  readonly cfg: SpeakerPeerConfig;
  readonly session: BgpSession;
  readonly log: Logger;
  /** Deconfigured (or the speaker stopped): ignore its session's events. */
  removed: boolean;
  since: number;
  info: string;
  /** In the Rib (from Established until its routes are gone). */
  inRib: boolean;
  /** Established and in an update group. */
  up: boolean;
  families: ReadonlySet<AfiSafi>;
  enhancedRefresh: boolean;
  /** The peer's graceful restart capability of the current/last session. */
  gr?: Negotiated['gracefulRestart'];
  readonly dirty: Record<AfiSafi, Set<string>>;
  jobs: Job[];
  pumpScheduled: boolean;
  initialDumps: number;
  dumpSent: number;
  readonly eorSent: Set<AfiSafi>;
  readonly eorReceived: Set<AfiSafi>;
  /** Graceful restart: families whose routes are kept stale, and the timer that ends it. */
  readonly staleFamilies: Set<AfiSafi>;
  grTimer?: NodeJS.Timeout;
}

function perFamily<T>(make: () => T): Record<AfiSafi, T> {
  return { 'ipv4-unicast': make(), 'ipv6-unicast': make() };
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Canonical address text (compact IPv6, IPv4-mapped unwrapped); the input when unparsable. */
export function canonicalAddress(a: string): string {
  try {
    return ipaddr.process(plainAddress(a)).toString();
  } catch {
    return a;
  }
}

/** Canonical CIDR (network address, compact IPv6), or undefined when not a prefix. */
export function canonicalPrefix(p: string): string | undefined {
  try {
    const [addr, len] = ipaddr.parseCIDR(p);
    const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(p) : ipaddr.IPv6.networkAddressFromCIDR(p);
    return `${net.toString()}/${len}`;
  } catch {
    return undefined;
  }
}

function batchOf(afiSafi: AfiSafi, attributes: PathAttributes, nlri: Nlri[]): UpdateBatch {
  return afiSafi === 'ipv6-unicast' && attributes.nextHop !== undefined
    ? { afiSafi, attributes, nlri, withdrawn: [], nextHop: attributes.nextHop }
    : { afiSafi, attributes, nlri, withdrawn: [] };
}

export class BgpSpeaker implements Speaker {
  #config: SpeakerConfig;
  readonly #log = logger('bgp');
  readonly #peers = new Map<string, Peer>();
  /** Canonical remote address -> peers with that address (for the listener). */
  #byAddress = new Map<string, Peer[]>();
  readonly #listener: Listener;
  #rib!: Rib;
  #groups!: UpdateGroups;
  readonly #fibListeners: Array<(changes: readonly FibChange[]) => void> = [];
  #local = new Set<string>();
  #started = false;
  #stopped = false;
  #syncDone = false;
  #flushHandle?: NodeJS.Immediate;
  readonly #stopping = new Set<Promise<void>>();
  // Reused per UPDATE by the ingest path (the Rib keeps neither the array nor its objects).
  readonly #annPool: Array<{ prefix: string; attrs: PathAttributes }> = [];
  readonly #annView: Announcement[] = [];
  readonly #wdView: string[] = [];

  constructor(config: SpeakerConfig) {
    this.#config = config;
    this.#listener = new Listener((remote) => this.#acceptorFor(remote), this.#log);
    this.#newRib();
  }

  // -------------------------------------------------------------------------------------------
  // Speaker contract
  // -------------------------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.#started) return;
    if (this.#config.listen !== false) await this.#listener.listen(this.#config.listen.addresses, this.#config.listen.port);
    this.#started = true;
    this.#stopped = false;
    for (const p of this.#peers.values()) p.session.start();
  }

  setPeers(peers: readonly SpeakerPeerConfig[]): void {
    const want = new Map<string, SpeakerPeerConfig>();
    for (const p of peers) want.set(p.id, p);
    for (const [id, p] of [...this.#peers]) {
      const next = want.get(id);
      if (next === undefined) {
        p.log.info(`peer deconfigured: stopping (Cease/3)`);
        this.#dropPeer(p, CeaseSubcode.PEER_DECONFIGURED, 'peer deconfigured');
      } else if (!samePeerConfig(p.cfg, next)) {
        p.log.info(`peer configuration changed: resetting the session (Cease/6)`);
        this.#dropPeer(p, CeaseSubcode.OTHER_CONFIGURATION_CHANGE, 'peer configuration changed');
      }
    }
    for (const [id, cfg] of want) if (!this.#peers.has(id)) this.#addPeer(cfg);
    this.#indexAddresses();
    this.#scheduleFlush();
  }

  setLocalRoutes(prefixes: Iterable<string>): void {
    const next = new Set<string>();
    for (const raw of prefixes) {
      const p = canonicalPrefix(raw);
      if (p === undefined) this.#log.warn(`ignoring local route '${raw}': not an IPv4/IPv6 prefix`);
      else next.add(p);
    }
    const withdrawn = perFamily((): string[] => []);
    for (const p of this.#local) if (!next.has(p)) withdrawn[afiSafiOfPrefix(p)].push(p);
    const attrs = localAttributes(this.#config);
    const announced = perFamily((): Announcement[] => []);
    for (const p of next) if (!this.#local.has(p)) announced[afiSafiOfPrefix(p)].push({ prefix: p, attrs });
    this.#local = next;
    for (const af of AFI_SAFIS) {
      if (withdrawn[af].length > 0 || announced[af].length > 0) this.#rib.update(LOCAL_PEER_ID, af, announced[af], withdrawn[af]);
    }
    this.#scheduleFlush();
  }

  initialSyncDone(): void {
    if (this.#syncDone) return;
    this.#syncDone = true;
    for (const p of this.#peers.values()) if (p.up) this.#pump(p);
  }

  onFib(listener: (changes: readonly FibChange[]) => void): () => void {
    this.#fibListeners.push(listener);
    return () => {
      const i = this.#fibListeners.indexOf(listener);
      if (i >= 0) this.#fibListeners.splice(i, 1);
    };
  }

  fibSnapshot(): FibChange[] {
    return fibSnapshot((af) => this.#rib.entries(af));
  }

  status(): SpeakerStatus {
    const peers: PeerStatus[] = [];
    for (const p of this.#peers.values()) peers.push(this.#peerStatus(p));
    const c = this.#config;
    return {
      asn: c.asn,
      routerId: c.routerId,
      ...(c.clusterId !== undefined ? { clusterId: c.clusterId } : {}),
      peers,
      locRib: { 'ipv4-unicast': this.#rib.locRibSize('ipv4-unicast'), 'ipv6-unicast': this.#rib.locRibSize('ipv6-unicast') },
      localRoutes: this.#local.size,
    };
  }

  async reconfigure(config: SpeakerConfig): Promise<void> {
    const old = this.#config;
    this.#config = config;
    if (identityChanged(old, config)) {
      this.#log.info(`AS/router id/cluster id/maxPaths changed: resetting every session and rebuilding the RIB`);
      const cfgs = [...this.#peers.values()].map((p) => p.cfg);
      for (const p of [...this.#peers.values()]) this.#dropPeer(p, CeaseSubcode.OTHER_CONFIGURATION_CHANGE, 'local configuration changed', false);
      // Removals for what the FIB was last given from the old RIB (its unflushed changes never left).
      const old = this.#rib;
      const removals = fibRemovals((af) => old.flushedEntries(af));
      this.#newRib();
      this.#emitFib(removals);
      const local = this.#local;
      this.#local = new Set();
      this.setLocalRoutes(local);
      for (const cfg of cfgs) this.#addPeer(cfg);
      this.#indexAddresses();
    } else {
      if (nextHopChanged(old, config)) {
        this.#log.info(`next hop changed: re-advertising to every peer`);
        for (const p of this.#peers.values()) {
          if (!p.up) continue;
          this.#groups.leave(p.cfg.id);
          this.#groups.join(p.cfg.id, groupPolicyOf(config, p.cfg));
          for (const af of AFI_SAFIS) if (p.families.has(af)) p.jobs.push({ kind: 'dump', af, initial: false });
          this.#pump(p);
        }
      }
      if (localAttributesChanged(old, config)) {
        const attrs = localAttributes(config);
        const announced = perFamily((): Announcement[] => []);
        for (const prefix of this.#local) announced[afiSafiOfPrefix(prefix)].push({ prefix, attrs });
        for (const af of AFI_SAFIS) if (announced[af].length > 0) this.#rib.update(LOCAL_PEER_ID, af, announced[af], []);
      }
    }
    if (listenChanged(old, config) && this.#started) {
      await this.#listener.close();
      if (config.listen !== false) await this.#listener.listen(config.listen.addresses, config.listen.port);
    }
    this.#scheduleFlush();
  }

  async stop(shutdownText?: string, opts: { readonly restarting?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#started = false;
    if (this.#flushHandle) clearImmediate(this.#flushHandle);
    this.#flushHandle = undefined;
    const stops: Promise<void>[] = [this.#listener.close()];
    for (const p of this.#peers.values()) {
      p.removed = true;
      this.#clearGr(p);
      p.up = false;
      stops.push(p.session.stop(shutdownText, opts).catch((err: unknown) => p.log.warn(`stop: ${errText(err)}`)));
    }
    await Promise.all([...stops, ...this.#stopping]);
  }

  // -------------------------------------------------------------------------------------------
  // Extras (not in the contract)
  // -------------------------------------------------------------------------------------------

  /** The bound listener addresses (the real port when 0 was configured). */
  get listening(): ReadonlyArray<{ address: string; port: number }> {
    return this.#listener.bound;
  }

  /** Ask a peer to resend its routes (ROUTE-REFRESH, RFC 2918); false when not possible now. */
  requestRefresh(peerId: string, afiSafi?: AfiSafi): boolean {
    const p = this.#peers.get(peerId);
    const opts = p?.session.encodeOptions;
    if (!p || !p.up || !opts || !p.session.negotiated?.routeRefresh) return false;
    const bufs: Buffer[] = [];
    for (const af of afiSafi ? [afiSafi] : AFI_SAFIS) {
      if (p.families.has(af)) bufs.push(encodeMessage({ type: 'route-refresh', afiSafi: af, subtype: 0 }, opts));
    }
    this.#write(p, bufs);
    return bufs.length > 0;
  }

  // -------------------------------------------------------------------------------------------
  // Peers
  // -------------------------------------------------------------------------------------------

  #newRib(): void {
    const c = this.#config;
    this.#rib = new Rib({ asn: c.asn, routerId: c.routerId, ...(c.clusterId !== undefined ? { clusterId: c.clusterId } : {}), ...(c.maxPaths !== undefined ? { maxPaths: c.maxPaths } : {}) });
    this.#groups = new UpdateGroups(this.#rib);
    this.#rib.onBestChanged((changes) => this.#onBest(changes));
  }

  #addPeer(cfg: SpeakerPeerConfig): void {
    const c = this.#config;
    const session = new BgpSession({
      localAs: c.asn,
      peerAs: cfg.asn,
      localId: c.routerId,
      peerAddress: cfg.address,
      peerPort: cfg.port ?? 179,
      ...(cfg.localAddress !== undefined ? { localAddress: cfg.localAddress } : {}),
      passive: cfg.passive === true,
      holdTime: cfg.holdTimeSec ?? 90,
      ...(c.connectRetrySec !== undefined ? { connectRetrySec: c.connectRetrySec } : {}),
      capabilities: capabilitiesOf(c),
      name: `bgp ${cfg.id}`,
    });
    const p: Peer = {
      cfg,
      session,
      log: logger(`bgp ${cfg.id}`),
      removed: false,
      since: Date.now(),
      info: '',
      inRib: false,
      up: false,
      families: new Set(),
      enhancedRefresh: false,
      dirty: perFamily(() => new Set<string>()),
      jobs: [],
      pumpScheduled: false,
      initialDumps: 0,
      dumpSent: 0,
      eorSent: new Set(),
      eorReceived: new Set(),
      staleFamilies: new Set(),
    };
    const guard =
      <A extends unknown[]>(what: string, fn: (...a: A) => void) =>
      (...a: A): void => {
        if (p.removed) return;
        try {
          fn(...a);
        } catch (err) {
          p.log.error(`${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
      };
    session.on('state', guard('state', () => void (p.since = Date.now())));
    session.on('established', guard('established', (info: EstablishedInfo) => this.#onEstablished(p, info)));
    session.on('update', guard('update', (u: UpdateMessage) => this.#onUpdate(p, u)));
    session.on('route-refresh', guard('route-refresh', (m: RouteRefreshMessage) => this.#onRouteRefresh(p, m)));
    session.on('down', guard('down', (d: DownInfo) => this.#onDown(p, d)));
    session.on('drain', guard('drain', () => this.#pump(p)));
    this.#peers.set(cfg.id, p);
    if (this.#started) session.start();
  }

  /** Stop a peer's session (Cease/`subcode` first when Established) and drop its routes. */
  #dropPeer(p: Peer, subcode: number, why: string, touchRib = true): void {
    p.removed = true;
    this.#peers.delete(p.cfg.id);
    this.#clearGr(p);
    if (p.up) this.#groups.leave(p.cfg.id);
    p.up = false;
    if (touchRib && p.inRib) this.#rib.removePeer(p.cfg.id);
    p.inRib = false;
    const opts = p.session.encodeOptions;
    if (opts) {
      const notif = encodeMessage({ type: 'notification', code: ErrorCode.CEASE, subcode, data: new Uint8Array(0) }, opts);
      p.session.send([notif]).catch(() => undefined);
    }
    const done = p.session
      .stop(why)
      .catch((err: unknown) => p.log.warn(`stop: ${errText(err)}`))
      .finally(() => this.#stopping.delete(done));
    this.#stopping.add(done);
  }

  #indexAddresses(): void {
    const m = new Map<string, Peer[]>();
    for (const p of this.#peers.values()) {
      const a = canonicalAddress(p.cfg.address);
      const l = m.get(a);
      if (l) l.push(p);
      else m.set(a, [p]);
    }
    this.#byAddress = m;
  }

  #acceptorFor(remote: string): Acceptor | undefined {
    if (this.#stopped) return undefined;
    const list = this.#byAddress.get(canonicalAddress(remote));
    if (!list || list.length === 0) return undefined;
    // Several peers on one address (different ports): the port-less one takes incoming sessions.
    const p = list.find((x) => x.cfg.id === x.cfg.address) ?? list.find((x) => (x.cfg.port ?? 179) === 179) ?? list[0];
    return (socket: Socket) => p.session.acceptSocket(socket);
  }

  #onEstablished(p: Peer, info: EstablishedInfo): void {
    const id = p.cfg.id;
    const n = info.negotiated;
    p.families = new Set(n.families);
    p.enhancedRefresh = n.enhancedRouteRefresh;
    p.gr = n.gracefulRestart;
    if (!p.inRib) {
      this.#rib.addPeer(ribPeerInfo(this.#config, p.cfg, info.peerId));
      p.inRib = true;
    } else if (this.#rib.peer(id)?.routerId !== info.peerId) {
      p.log.warn(`router id changed from ${this.#rib.peer(id)?.routerId} to ${info.peerId} during graceful restart; keeping the old one until the session resets`);
    }
    if (p.staleFamilies.size > 0) {
      // RFC 4724 4.2: families the restarted peer no longer preserves are flushed now.
      this.#clearGrTimer(p);
      for (const af of [...p.staleFamilies]) {
        const f = n.gracefulRestart?.families.find((x) => x.afiSafi === af);
        if (!f || !f.forwardingPreserved || !p.families.has(af)) {
          const k = this.#rib.sweepStale(id, af);
          p.staleFamilies.delete(af);
          p.log.info(`graceful restart: ${af} not preserved by the restarted peer: ${k} stale routes removed`);
        }
      }
      if (p.staleFamilies.size > 0) {
        p.info = `graceful restart: keeping stale routes until End-of-RIB`;
        this.#startGrTimer(p, this.#restartWindow(p, n.gracefulRestart?.restartTimeSec));
      }
    }
    this.#groups.join(id, groupPolicyOf(this.#config, p.cfg));
    p.up = true;
    for (const af of AFI_SAFIS) p.dirty[af].clear();
    p.jobs = [];
    p.eorSent.clear();
    p.eorReceived.clear();
    p.dumpSent = 0;
    p.initialDumps = 0;
    for (const af of AFI_SAFIS) {
      if (!p.families.has(af)) continue;
      p.jobs.push({ kind: 'dump', af, initial: true });
      p.initialDumps++;
    }
    for (const af of AFI_SAFIS) if (p.families.has(af)) p.jobs.push({ kind: 'eor', af });
    this.#pump(p);
    this.#scheduleFlush();
  }

  #onDown(p: Peer, d: DownInfo): void {
    const id = p.cfg.id;
    const wasUp = p.up;
    if (p.up) this.#groups.leave(id);
    p.up = false;
    p.jobs = [];
    for (const af of AFI_SAFIS) p.dirty[af].clear();
    const n = d.notification;
    p.info = n
      ? `${d.reason} (NOTIFICATION ${n.direction} ${n.code}/${n.subcode}${n.shutdownText ? ` "${n.shutdownText}"` : ''})`
      : d.reason;
    if (!p.inRib) return;
    if (!wasUp) return; // a failed attempt while its routes are kept stale: keep waiting
    const gr = p.gr;
    const window = this.#restartWindow(p, gr?.restartTimeSec);
    if (gr && gr.local && n === undefined && gr.families.length > 0 && window > 0) {
      let kept = 0;
      for (const af of AFI_SAFIS) {
        if (gr.families.some((f) => f.afiSafi === af)) {
          kept += this.#rib.markStale(id, af);
          p.staleFamilies.add(af);
        } else {
          this.#rib.markStale(id, af);
          this.#rib.sweepStale(id, af);
        }
      }
      p.info = `${p.info}; graceful restart: keeping ${kept} routes stale for up to ${window} s`;
      p.log.info(`graceful restart: keeping ${kept} routes stale for up to ${window} s`);
      this.#startGrTimer(p, window);
    } else {
      const k = this.#rib.removePeer(id);
      p.inRib = false;
      this.#clearGr(p);
      if (k > 0) p.log.info(`session down: ${k} routes withdrawn`);
    }
    this.#scheduleFlush();
  }

  #restartWindow(p: Peer, peerRestartSec: number | undefined): number {
    const max = p.cfg.maxRestartTimeSec ?? DEFAULT_MAX_RESTART_TIME_SEC;
    return Math.max(0, Math.min(peerRestartSec ?? max, max));
  }

  #startGrTimer(p: Peer, sec: number): void {
    this.#clearGrTimer(p);
    const t = setTimeout(() => {
      if (p.grTimer !== t || p.removed) return;
      p.grTimer = undefined;
      try {
        const k = this.#endGr(p);
        p.log.info(`graceful restart timer expired: ${k} stale routes removed`);
        p.info = `graceful restart timer expired after ${sec} s: ${k} stale routes removed`;
        this.#scheduleFlush();
      } catch (err) {
        p.log.error(`graceful restart timer: ${errText(err)}`);
      }
    }, sec * 1000);
    t.unref?.();
    p.grTimer = t;
  }

  /** Drop every stale route of the peer (and the peer from the RIB when it is not up). */
  #endGr(p: Peer): number {
    let k = 0;
    if (p.inRib) {
      if (p.up) for (const af of p.staleFamilies) k += this.#rib.sweepStale(p.cfg.id, af);
      else {
        k = this.#rib.removePeer(p.cfg.id);
        p.inRib = false;
      }
    }
    p.staleFamilies.clear();
    return k;
  }

  #clearGrTimer(p: Peer): void {
    if (p.grTimer) clearTimeout(p.grTimer);
    p.grTimer = undefined;
  }

  #clearGr(p: Peer): void {
    this.#clearGrTimer(p);
    p.staleFamilies.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Routes in
  // -------------------------------------------------------------------------------------------

  #onUpdate(p: Peer, u: UpdateMessage): void {
    if (!p.inRib || !p.up) return;
    const id = p.cfg.id;
    const eor = endOfRibFamily(u);
    if (eor !== undefined) {
      p.eorReceived.add(eor);
      if (p.staleFamilies.has(eor)) {
        const k = this.#rib.sweepStale(id, eor);
        p.staleFamilies.delete(eor);
        p.log.info(`End-of-RIB ${eor}: ${k} stale routes removed`);
        if (p.staleFamilies.size === 0) {
          this.#clearGrTimer(p);
          p.info = `graceful restart complete (End-of-RIB)`;
        }
        this.#scheduleFlush();
      }
      return;
    }
    const withdraw = u.handling === 'treat-as-withdraw';
    if (u.withdrawn.length > 0 || u.nlri.length > 0) {
      const wd = this.#withdrawnView(u.withdrawn, withdraw ? u.nlri : undefined);
      const ann = withdraw ? NO_ANNOUNCEMENTS : this.#announcedView(u.nlri, this.#importAttrs(p, u.attributes));
      this.#rib.update(id, 'ipv4-unicast', ann, wd);
    }
    const mpr = u.mpReach;
    const mpu = u.mpUnreach;
    if (mpu && mpu.withdrawn.length > 0) this.#rib.update(id, mpu.afiSafi, NO_ANNOUNCEMENTS, this.#withdrawnView(mpu.withdrawn));
    if (mpr && mpr.nlri.length > 0) {
      if (withdraw) this.#rib.update(id, mpr.afiSafi, NO_ANNOUNCEMENTS, this.#withdrawnView(mpr.nlri));
      else this.#rib.update(id, mpr.afiSafi, this.#announcedView(mpr.nlri, this.#importAttrs(p, u.attributes, mpr.nextHop)), []);
    }
    this.#scheduleFlush();
  }

  /** What the RIB stores: the MP_REACH next hop as nextHop; no LOCAL_PREF from eBGP (RFC 4271 5.1.5). */
  #importAttrs(p: Peer, a: PathAttributes, mpNextHop?: string): PathAttributes {
    const ebgp = p.cfg.asn !== this.#config.asn;
    if (mpNextHop === undefined && !(ebgp && a.localPref !== undefined)) return a;
    const out: { -readonly [K in keyof PathAttributes]: PathAttributes[K] } = { ...a };
    if (mpNextHop !== undefined) out.nextHop = mpNextHop;
    if (ebgp) delete out.localPref;
    return out;
  }

  #withdrawnView(a: readonly Nlri[], b?: readonly Nlri[]): string[] {
    const w = this.#wdView;
    w.length = 0;
    for (let i = 0; i < a.length; i++) w.push(a[i].prefix);
    if (b) for (let i = 0; i < b.length; i++) w.push(b[i].prefix);
    return w;
  }

  #announcedView(nlri: readonly Nlri[], attrs: PathAttributes): Announcement[] {
    const pool = this.#annPool;
    const view = this.#annView;
    view.length = nlri.length;
    for (let i = 0; i < nlri.length; i++) {
      let o = pool[i];
      if (o === undefined) pool[i] = o = { prefix: '', attrs };
      o.prefix = nlri[i].prefix;
      o.attrs = attrs;
      view[i] = o;
    }
    return view;
  }

  #onRouteRefresh(p: Peer, m: RouteRefreshMessage): void {
    if (m.unsupportedFamily || !p.up || !p.families.has(m.afiSafi)) return;
    const af = m.afiSafi;
    if (m.subtype === 0) {
      p.log.info(`ROUTE-REFRESH ${af}: resending our table${p.enhancedRefresh ? ' (BoRR/EoRR)' : ''}`);
      if (p.enhancedRefresh) p.jobs.push({ kind: 'borr', af }, { kind: 'dump', af, initial: false }, { kind: 'eorr', af });
      else p.jobs.push({ kind: 'dump', af, initial: false });
      this.#pump(p);
    } else if (m.subtype === 1) {
      this.#rib.markStale(p.cfg.id, af); // RFC 7313 4: BoRR
    } else if (m.subtype === 2) {
      const k = this.#rib.sweepStale(p.cfg.id, af);
      if (k > 0) p.log.info(`EoRR ${af}: ${k} routes not refreshed removed`);
      this.#scheduleFlush();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Loc-RIB changes -> FIB and peers
  // -------------------------------------------------------------------------------------------

  #scheduleFlush(): void {
    if (this.#flushHandle !== undefined || this.#stopped) return;
    this.#flushHandle = setImmediate(() => {
      this.#flushHandle = undefined;
      try {
        this.#rib.flush();
      } catch (err) {
        this.#log.error(`RIB flush: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    });
  }

  #onBest(changes: BestChange[]): void {
    try {
      this.#emitFib(fibChanges(changes));
    } catch (err) {
      this.#log.error(`FIB output: ${errText(err)}`);
    }
    for (const out of this.#groups.process(changes)) {
      try {
        this.#sendGroup(out);
      } catch (err) {
        this.#log.error(`update group ${out.group.id}: ${errText(err)}`);
      }
    }
  }

  #emitFib(changes: readonly FibChange[]): void {
    if (changes.length === 0) return;
    for (const l of [...this.#fibListeners]) {
      try {
        l(changes);
      } catch (err) {
        this.#log.error(`onFib listener: ${errText(err)}`);
      }
    }
  }

  /** Encode once per group (per codec options), write the same Buffers to every writable peer. */
  #sendGroup(o: GroupOutput): void {
    let enc: BatchEncoder | undefined;
    for (const id of o.peers) {
      const p = this.#peers.get(id);
      if (!p || !p.up) continue;
      const opts = p.session.encodeOptions;
      if (!opts) continue;
      if (p.session.writable) {
        enc ??= new BatchEncoder(o.batches, this.#log);
        this.#write(p, enc.forPeer(opts, p.families));
      } else {
        // Coalesce: on 'drain' the peer gets the group's state for these prefixes as it is then.
        for (const b of o.batches) {
          if (!p.families.has(b.afiSafi)) continue;
          const d = p.dirty[b.afiSafi];
          for (const n of b.nlri) d.add(n.prefix);
          for (const n of b.withdrawn) d.add(n.prefix);
        }
      }
    }
  }

  #write(p: Peer, bufs: readonly Buffer[]): void {
    if (bufs.length === 0) return;
    p.session.send(bufs).catch((err: unknown) => p.log.debug(`send: ${errText(err)}`));
  }

  #eorAllowed(): boolean {
    return this.#config.restarting !== true || this.#syncDone;
  }

  /** Send what the peer is owed (dirty prefixes, dumps, markers) while its socket takes it. */
  #pump(p: Peer): void {
    if (!p.up || p.pumpScheduled) return;
    const g = this.#groups.groupOf(p.cfg.id);
    const opts = p.session.encodeOptions;
    if (!g || !opts) return;
    for (let steps = 0; p.up && p.session.writable; steps++) {
      if (steps >= PUMP_STEPS) {
        p.pumpScheduled = true;
        setImmediate(() => {
          p.pumpScheduled = false;
          if (p.removed) return;
          try {
            this.#pump(p);
          } catch (err) {
            p.log.error(`output: ${errText(err)}`);
          }
        });
        return;
      }
      if (this.#sendDirty(p, g, opts)) continue;
      const i = p.jobs.findIndex((j) => j.kind !== 'eor' || this.#eorAllowed());
      if (i < 0) return;
      const job = p.jobs[i];
      if (job.kind === 'dump') {
        if (this.#sendDumpChunk(p, g, job, opts)) continue;
        p.jobs.splice(i, 1);
        if (job.initial) p.initialDumps--;
        continue;
      }
      p.jobs.splice(i, 1);
      if (job.kind === 'eor') {
        this.#write(p, [endOfRib(job.af, opts)]);
        p.eorSent.add(job.af);
        p.log.debug(`End-of-RIB ${job.af} sent`);
      } else {
        this.#write(p, [encodeMessage({ type: 'route-refresh', afiSafi: job.af, subtype: job.kind === 'borr' ? 1 : 2 }, opts)]);
      }
    }
  }

  #sendDirty(p: Peer, g: UpdateGroup, opts: NonNullable<BgpSession['encodeOptions']>): boolean {
    for (const af of AFI_SAFIS) {
      const d = p.dirty[af];
      if (d.size === 0) continue;
      const out = g.adjOut[af];
      const withdrawn: Nlri[] = [];
      const by = new Map<InternedAttrs, Nlri[]>();
      let n = 0;
      for (const prefix of d) {
        d.delete(prefix);
        const h = out.get(prefix);
        if (h === undefined) withdrawn.push({ prefix });
        else {
          const l = by.get(h);
          if (l) l.push({ prefix });
          else by.set(h, [{ prefix }]);
        }
        if (++n >= CHUNK) break;
      }
      const bufs: Buffer[] = [];
      if (withdrawn.length > 0) bufs.push(...encodeBatch({ afiSafi: af, attributes: {}, nlri: [], withdrawn }, opts, p.log));
      for (const [h, nlri] of by) bufs.push(...encodeBatch(batchOf(af, h.attrs, nlri), opts, p.log));
      this.#write(p, bufs);
      return true;
    }
    return false;
  }

  /** One chunk of a table dump; false when the dump is complete. */
  #sendDumpChunk(p: Peer, g: UpdateGroup, job: Extract<Job, { kind: 'dump' }>, opts: NonNullable<BgpSession['encodeOptions']>): boolean {
    job.iter ??= g.adjOut[job.af].entries();
    const by = new Map<InternedAttrs, Nlri[]>();
    let n = 0;
    let done = false;
    while (n < CHUNK) {
      const r = job.iter.next();
      if (r.done) {
        done = true;
        break;
      }
      const [prefix, h] = r.value;
      const l = by.get(h);
      if (l) l.push({ prefix });
      else by.set(h, [{ prefix }]);
      n++;
    }
    if (n > 0) {
      const bufs: Buffer[] = [];
      for (const [h, nlri] of by) bufs.push(...encodeBatch(batchOf(job.af, h.attrs, nlri), opts, p.log));
      if (job.initial) p.dumpSent += n;
      this.#write(p, bufs);
    }
    return !done;
  }

  // -------------------------------------------------------------------------------------------
  // Status
  // -------------------------------------------------------------------------------------------

  #peerStatus(p: Peer): PeerStatus {
    const c = p.cfg;
    let received = 0;
    if (p.inRib) for (const af of AFI_SAFIS) received += this.#rib.adjRibInSize(c.id, af);
    let advertised = 0;
    if (p.up) {
      const g = this.#groups.groupOf(c.id);
      if (g) for (const af of AFI_SAFIS) if (p.families.has(af)) advertised += g.adjOut[af].size;
      if (p.initialDumps > 0) advertised = Math.min(advertised, p.dumpSent);
    }
    const k = p.session.counters;
    return {
      id: c.id,
      address: c.address,
      port: c.port ?? 179,
      asn: c.asn,
      kind: c.kind,
      ...(c.source !== undefined ? { source: c.source } : {}),
      state: p.session.state as PeerState,
      since: new Date(p.since).toISOString(),
      info: p.info,
      prefixesReceived: received,
      prefixesAdvertised: advertised,
      ...(p.staleFamilies.size > 0 ? { gracefulRestart: true } : {}),
      establishedTransitions: k.establishedTransitions,
      updatesReceived: k.updatesIn,
      updatesSent: k.updatesOut,
      endOfRibReceived: AFI_SAFIS.filter((af) => p.eorReceived.has(af)),
      endOfRibSent: AFI_SAFIS.filter((af) => p.eorSent.has(af)),
    };
  }
}
