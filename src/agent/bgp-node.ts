/**
 * The BGP side of a running node (or route reflector), between the datastore and the speaker:
 * keeps the BGP resources (Node, BGPPeer, BGPConfiguration) from syncer updates, recomputes the
 * speaker's configuration and peers with computeBgp() after a short debounce, and hands the result
 * to the speaker (start on first use, then reconfigure / setPeers, which reset only what changed).
 * On a node it also feeds the local workloads' /32 and /128 routes to the speaker, the speaker's
 * Loc-RIB changes to the kernel FIB writer, and runs the FIB's restart protocol: start() keeps the
 * routes from before a restart, syncDone() sweeps them once every peer has converged (or after a
 * timeout), resync() repairs drift periodically. With `aggregateBlocks`, the node's own block
 * affinities (onAffinityUpdates) turn the workload routes into one route per confirmed block plus
 * the borrowed addresses (aggregation.ts), and each confirmed block gets a blackhole in the FIB.
 *
 * Owns: when the speaker and the FIB are told what. Never: the BGP wire, the kernel itself (both
 * behind the Speaker and FibPart interfaces), the datastore (updates come in, nothing goes out).
 * onUpdates() is cheap and does no I/O; all speaker calls happen in one serialized reconcile.
 */
import type { FibChange, PeerStatus, Speaker, SpeakerConfig, SpeakerPeerConfig, SpeakerStatus } from '../bgp/speaker-api.ts';
import type { SyncStatus, SyncUpdate } from '../datastore/syncer.ts';
import { parseResourceKey } from '../datastore/keys.ts';
import { validateResource } from '../model/validate.ts';
import type { BGPConfiguration, BGPPeer, Node } from '../model/types.ts';
import { errorMessage } from '../errors.ts';
import { logger, type Logger } from '../log.ts';
import { computeBgp, type BgpOptions, type BgpProblem } from './bgp-config.ts';
import { AffinityTable, aggregateRoutes } from './aggregation.ts';
import { cidrContains, parseCidr, type Cidr } from '../ipam/block-math.ts';
import type { DataplaneModel } from './model.ts';

/** The agent's workload routes (route-reconciler); present after a restart like our own 193s. */
export const WORKLOAD_ROUTE_PROTO = 192;

/** What this module needs of the kernel FIB writer (BgpFib in src/agent/kernel/fib.ts). */
export interface FibPart {
  start(): Promise<{ stale: number }>;
  apply(changes: readonly FibChange[]): Promise<unknown>;
  syncDone(): Promise<unknown>;
  resync(all: readonly FibChange[]): Promise<unknown>;
  exportedKernelRoutes(protocols: readonly number[]): Promise<string[]>;
  /**
   * Blackhole routes (ours) for exactly these prefixes; `complete`: the list reflects the full
   * datastore view, so ours not listed are removed. Optional: a FIB without it gets none.
   */
  setBlackholes?(prefixes: readonly string[], complete: boolean): Promise<unknown>;
  close(): Promise<void>;
}

export interface BgpNodeOptions {
  /** The Node resource this speaker belongs to. */
  readonly nodeName: string;
  readonly createSpeaker: (config: SpeakerConfig) => Speaker;
  /** The kernel FIB (node role); none for a route reflector. */
  readonly fib?: FibPart;
  /** True on a node: local routes come from setLocalRoutes(); false: nothing is originated. */
  readonly originates: boolean;
  /** listenPort / clusterId / restartTimeSec for computeBgp (restarting is found by start()). */
  readonly compute?: Omit<BgpOptions, 'restarting'>;
  /** Recompute this long after the last BGP resource change (default 100 ms). */
  readonly debounceMs?: number;
  /** Sweep stale kernel routes at the latest this long after the speaker started (default 30 s). */
  readonly eorTimeoutMs?: number;
  /** A peer without an End-of-RIB indication counts as converged this long after Established (default 2 s). */
  readonly settleMs?: number;
  /** Full FIB resync period (0: never; default 0). */
  readonly resyncIntervalMs?: number;
  /**
   * Kernel route protocols (numbers) whose routes in the main table are advertised too, beside
   * the local workload routes (Calico's export of e.g. `static` routes). Needs `fib`.
   */
  readonly exportKernelProtocols?: readonly number[];
  /**
   * Route aggregation (Calico's): advertise each confirmed affine block of this node (from
   * onAffinityUpdates) instead of its workloads' /32s, blackhole the blocks in the FIB. The local
   * routes count as complete only once the affinities are in sync too.
   */
  readonly aggregateBlocks?: boolean;
  readonly log?: Logger;
}

/** What `routecat status` and the control socket's `bgp` endpoint show. */
export interface BgpNodeStatus {
  readonly state: 'waiting-for-datastore' | 'disabled' | 'running' | 'stopped';
  readonly reason?: string;
  readonly restarting: boolean;
  readonly fibSynced: boolean;
  readonly problems: readonly BgpProblem[];
  readonly speaker?: SpeakerStatus;
}

const BGP_PLURALS = new Set(['nodes', 'bgppeers', 'bgpconfigurations']);

/** Local workload routes from an applied model: every local endpoint's /32 and /128 (sorted). */
export function localWorkloadRoutes(model: DataplaneModel): string[] {
  const out = new Set<string>();
  for (const ep of model.endpoints.values()) {
    if (ep.type !== 'workload') continue;
    for (const n of ep.ipv4Nets) out.add(n);
    for (const n of ep.ipv6Nets) out.add(n);
  }
  return [...out].sort();
}

/**
 * A peer has converged when it is Established and sent End-of-RIB (for any family: a peer sends
 * them back to back after its initial table); when the speaker does not report End-of-RIB, when it
 * has been Established for `settleMs`.
 */
export function peerConverged(p: PeerStatus, nowMs: number, settleMs: number): boolean {
  if (p.state !== 'Established') return false;
  if (p.endOfRibReceived !== undefined) return p.endOfRibReceived.length > 0;
  const since = Date.parse(p.since);
  return Number.isNaN(since) || nowMs - since >= settleMs;
}

/** Configuration equality, ignoring key order. */
function sameJson(a: unknown, b: unknown): boolean {
  return stableJson(a) === stableJson(b);
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export class BgpNode {
  readonly #opts: BgpNodeOptions;
  readonly #log: Logger;
  readonly #nodes = new Map<string, Node>();
  readonly #peers = new Map<string, BGPPeer>();
  readonly #configs = new Map<string, BGPConfiguration>();
  /** Invalid BGP resources by key (skipped), and problems computeBgp found. */
  readonly #badResources = new Map<string, string>();
  #computeProblems: BgpProblem[] = [];
  readonly #reported = new Set<string>();
  #inSync = false;
  #started = false;
  #stopped = false;
  #restarting = false;
  #reason: string | undefined = 'waiting for the datastore';
  #speaker: Speaker | undefined;
  #unsubscribeFib: (() => void) | undefined;
  #config: SpeakerConfig | undefined;
  #appliedPeers: readonly SpeakerPeerConfig[] | undefined;
  #localRoutes: string[] | undefined;
  readonly #affinities: AffinityTable;
  #affinitiesInSync = false;
  /** The last onApplied input (workload routes, exported kernel routes, in sync), for re-aggregation. */
  #lastLocal: { workloads: string[]; extra: string[]; inSync: boolean } | undefined;
  /** Service ranges from BGPConfiguration, advertised as they are. */
  #serviceRoutes: string[] = [];
  /** IPPools with disableBGPExport: workload routes and blocks inside them are not advertised. */
  #noExport: Cidr[] = [];
  #blackholeKey: string | undefined;
  #exportSeq = 0;
  #localReady = false;
  #initialSyncSent = false;
  #fibSynced = false;
  #speakerStartedAt = 0;
  #debounce: NodeJS.Timeout | undefined;
  #eorTimer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #serial: Promise<void> = Promise.resolve();
  #idle: Array<() => void> = [];
  #pendingRuns = 0;

  constructor(opts: BgpNodeOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? logger('bgp');
    this.#affinities = new AffinityTable(opts.nodeName);
  }

  /** True when the kernel had our routes at start(): the speaker announces a graceful restart. */
  get restarting(): boolean {
    return this.#restarting;
  }
  get speaker(): Speaker | undefined {
    return this.#speaker;
  }
  get fibSynced(): boolean {
    return this.#fibSynced;
  }

  /** Starts the FIB (keeping routes from before a restart) and decides whether this is a restart. */
  async start(): Promise<void> {
    const fib = this.#opts.fib;
    if (fib) {
      const { stale } = await fib.start();
      let workloadRoutes = 0;
      try {
        workloadRoutes = (await fib.exportedKernelRoutes([WORKLOAD_ROUTE_PROTO])).length;
      } catch (err) {
        this.#log.warn(`cannot read proto-${WORKLOAD_ROUTE_PROTO} routes: ${errorMessage(err)}`);
      }
      this.#restarting = stale > 0 || workloadRoutes > 0;
      if (this.#restarting) this.#log.info(`restart detected (${stale} BGP routes, ${workloadRoutes} workload routes in the kernel): announcing graceful restart, forwarding state kept`);
    }
    if (this.#opts.resyncIntervalMs && this.#opts.resyncIntervalMs > 0 && fib) {
      this.#resyncTimer = setInterval(() => this.#resync(), this.#opts.resyncIntervalMs);
      this.#resyncTimer.unref();
    }
    this.#started = true;
    this.#schedule();
  }

  /** Syncer updates: keeps the BGP resources, ignores the rest. Cheap, no I/O. */
  onUpdates(updates: readonly SyncUpdate[]): void {
    let changed = false;
    for (const u of updates) {
      const parsed = parseResourceKey(u.key);
      if (!parsed || !BGP_PLURALS.has(parsed.kind.plural)) continue;
      const map = parsed.kind.plural === 'nodes' ? this.#nodes : parsed.kind.plural === 'bgppeers' ? this.#peers : this.#configs;
      changed = true;
      this.#badResources.delete(u.key);
      if (u.value === null) {
        map.delete(u.key);
        continue;
      }
      try {
        const r = validateResource(JSON.parse(u.value) as unknown);
        if (r.kind !== parsed.kind.kind) throw new Error(`kind '${r.kind}' stored under the ${parsed.kind.plural} prefix`);
        if (r.metadata.name !== parsed.name) throw new Error(`metadata.name '${r.metadata.name}' does not match the key`);
        map.set(u.key, r as never);
      } catch (err) {
        map.delete(u.key);
        const reason = errorMessage(err);
        this.#badResources.set(u.key, reason);
        this.#report(u.key, reason);
      }
    }
    if (changed) this.#schedule();
  }

  onSyncStatus(s: SyncStatus): void {
    if (s !== 'InSync' || this.#inSync) return;
    this.#inSync = true;
    this.#schedule();
  }

  /**
   * The locally originated routes. `complete`: they reflect a full datastore view (the agent's
   * first in-sync apply), so the speaker may send End-of-RIB after them.
   */
  setLocalRoutes(prefixes: readonly string[], complete: boolean): void {
    if (!this.#opts.originates) return;
    const changed = !this.#localRoutes || !sameJson(this.#localRoutes, prefixes);
    this.#localRoutes = [...prefixes];
    if (changed) this.#speaker?.setLocalRoutes(this.#localRoutes);
    if (complete && !this.#localReady) {
      this.#localReady = true;
      this.#maybeInitialSyncDone();
    }
  }

  /** After each agent apply: its local workload routes. */
  onApplied(model: DataplaneModel, inSync: boolean): void {
    this.#noExport = model.pools.filter((p) => p.disableBGPExport).map((p) => parseCidr(p.cidr));
    const workloads = localWorkloadRoutes(model);
    const protocols = this.#opts.exportKernelProtocols ?? [];
    const fib = this.#opts.fib;
    if (protocols.length === 0 || !fib) {
      this.#setLocal(workloads, [], inSync);
      return;
    }
    // Kernel routes to export are read after each apply (kernel events trigger applies too); a
    // read that finishes after a newer one started is dropped.
    const seq = ++this.#exportSeq;
    fib.exportedKernelRoutes(protocols).then(
      (extra) => {
        if (seq !== this.#exportSeq) return;
        this.#setLocal(workloads, extra, inSync);
      },
      (err: unknown) => {
        this.#log.warn(`cannot read kernel routes to export: ${errorMessage(err)}`);
        if (seq === this.#exportSeq) this.#setLocal(workloads, [], inSync);
      },
    );
  }

  /** Updates of this node's block affinities (`/calico/ipam/v2/host/<node>/`). Cheap, no I/O of its own. */
  onAffinityUpdates(updates: readonly SyncUpdate[]): void {
    if (!this.#opts.aggregateBlocks) return;
    const { changed, problems } = this.#affinities.apply(updates);
    for (const p of problems) this.#report('block affinity', p);
    if (!changed) return;
    this.#log.info(`confirmed affine blocks: ${this.#affinities.confirmed().join(', ') || 'none'}`);
    this.#republish();
  }

  onAffinityStatus(s: SyncStatus): void {
    if (!this.#opts.aggregateBlocks || s !== 'InSync' || this.#affinitiesInSync) return;
    this.#affinitiesInSync = true;
    this.#republish();
  }

  /** The confirmed affine blocks as last seen (status, tests). */
  get affineBlocks(): string[] {
    return this.#affinities.confirmed();
  }

  status(): BgpNodeStatus {
    const problems = [...[...this.#badResources].map(([key, reason]) => ({ key, reason })), ...this.#computeProblems];
    const state = this.#stopped ? 'stopped' : this.#speaker ? 'running' : this.#inSync ? 'disabled' : 'waiting-for-datastore';
    return {
      state,
      ...(this.#reason && !this.#speaker ? { reason: this.#reason } : {}),
      restarting: this.#restarting,
      fibSynced: this.#fibSynced,
      problems,
      ...(this.#speaker ? { speaker: this.#speaker.status() } : {}),
    };
  }

  /** Resolves when no reconcile is queued or running (tests). */
  whenIdle(): Promise<void> {
    if (!this.#debounce && this.#pendingRuns === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Stops the speaker (Cease to every peer) and the FIB writer; kernel routes stay. */
  async stop(shutdownText = 'routecat stopping', opts: { readonly restarting?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of [this.#debounce, this.#eorTimer]) if (t) clearTimeout(t);
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    this.#debounce = undefined;
    await this.#serial;
    this.#unsubscribeFib?.();
    const s = this.#speaker;
    this.#speaker = undefined;
    if (s) await s.stop(shutdownText, opts).catch((err: unknown) => this.#log.warn(`stopping the speaker: ${errorMessage(err)}`));
    await this.#opts.fib?.close().catch((err: unknown) => this.#log.warn(`closing the FIB: ${errorMessage(err)}`));
    for (const f of this.#idle.splice(0)) f();
  }

  // --- internals ---------------------------------------------------------------------------------

  /** Local routes from workloads + exported kernel routes, aggregated into blocks when enabled. */
  #setLocal(workloads: string[], extra: string[], inSync: boolean): void {
    this.#lastLocal = { workloads, extra, inSync };
    const exported = (routes: readonly string[]) => routes.filter((r) => !this.#noExport.some((pool) => cidrContains(pool, parseCidr(r))));
    const others = [...extra, ...this.#serviceRoutes];
    if (!this.#opts.aggregateBlocks) {
      this.setLocalRoutes([...new Set([...exported(workloads), ...others])].sort(), inSync);
      return;
    }
    const routes = aggregateRoutes(this.#affinities.confirmed(), workloads);
    this.setLocalRoutes([...new Set([...exported(routes), ...others])].sort(), inSync && this.#affinitiesInSync);
  }

  /** After an affinity change: re-aggregate the last local routes and update the blackholes. */
  #republish(): void {
    if (this.#lastLocal) this.#setLocal(this.#lastLocal.workloads, this.#lastLocal.extra, this.#lastLocal.inSync);
    const fib = this.#opts.fib;
    if (!fib?.setBlackholes || !this.#affinitiesInSync || this.#stopped) return;
    const blocks = this.#affinities.confirmed();
    const key = blocks.join(',');
    if (key === this.#blackholeKey) return;
    this.#blackholeKey = key;
    fib.setBlackholes(blocks, true).catch((err: unknown) => {
      this.#blackholeKey = undefined;
      this.#log.warn(`block blackholes failed: ${errorMessage(err)}`);
    });
  }

  #report(key: string, reason: string): void {
    const id = `${key}\0${reason}`;
    if (this.#reported.has(id)) return;
    this.#reported.add(id);
    this.#log.warn(`BGP: skipping ${key}: ${reason}`);
  }

  #schedule(): void {
    if (!this.#started || !this.#inSync || this.#stopped) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#pendingRuns++;
      this.#serial = this.#serial
        .then(() => this.#reconcile())
        .catch((err: unknown) => {
          this.#log.error(`BGP reconfiguration failed (retrying): ${errorMessage(err)}`);
          setTimeout(() => this.#schedule(), 1_000).unref();
        })
        .finally(() => {
          this.#pendingRuns--;
          if (this.#pendingRuns === 0 && !this.#debounce) for (const f of this.#idle.splice(0)) f();
        });
    }, this.#opts.debounceMs ?? 100);
  }

  async #reconcile(): Promise<void> {
    if (this.#stopped) return;
    const r = computeBgp(
      this.#opts.nodeName,
      { nodes: [...this.#nodes.values()], bgpPeers: [...this.#peers.values()], bgpConfigs: [...this.#configs.values()] },
      { ...this.#opts.compute, ...(this.#restarting ? { restarting: true } : {}) },
    );
    this.#computeProblems = r.problems;
    for (const p of r.problems) this.#report(p.key, p.reason);
    if (!sameJson(this.#serviceRoutes, r.serviceRoutes)) {
      this.#serviceRoutes = r.serviceRoutes;
      this.#log.info(`service ranges advertised: ${r.serviceRoutes.join(', ') || 'none'}`);
      if (this.#lastLocal) this.#setLocal(this.#lastLocal.workloads, this.#lastLocal.extra, this.#lastLocal.inSync);
    }
    if (!r.config) {
      if (this.#reason !== r.reason) this.#log.warn(`BGP speaker not running: ${r.reason ?? 'no configuration'}`);
      this.#reason = r.reason;
      const s = this.#speaker;
      if (s) {
        this.#speaker = undefined;
        this.#unsubscribeFib?.();
        this.#config = undefined;
        this.#appliedPeers = undefined;
        this.#initialSyncSent = false;
        await s.stop(`routecat: ${r.reason ?? 'BGP disabled'}`);
      }
      return;
    }
    this.#reason = undefined;
    if (!this.#speaker) {
      const s = this.#opts.createSpeaker(r.config);
      const fib = this.#opts.fib;
      if (fib) {
        this.#unsubscribeFib = s.onFib((changes) => {
          fib.apply(changes).catch((err: unknown) => this.#log.warn(`FIB apply failed: ${errorMessage(err)}`));
        });
      }
      try {
        await s.start();
      } catch (err) {
        // e.g. the listen address is not (yet) on this host: drop this speaker, retry later.
        this.#unsubscribeFib?.();
        this.#unsubscribeFib = undefined;
        await s.stop().catch(() => undefined);
        throw err;
      }
      if (this.#stopped) {
        await s.stop();
        return;
      }
      this.#speaker = s;
      this.#config = r.config;
      this.#speakerStartedAt = Date.now();
      this.#log.info(`BGP speaker started: AS ${r.config.asn}, router id ${r.config.routerId}${r.config.clusterId ? `, cluster ${r.config.clusterId}` : ''}${r.config.listen ? `, listening on ${r.config.listen.addresses.join(', ')} port ${r.config.listen.port}` : ''}${this.#restarting ? ', graceful restart' : ''}`);
      if (this.#localRoutes) s.setLocalRoutes(this.#localRoutes);
      s.setPeers(r.peers);
      this.#appliedPeers = r.peers;
      this.#maybeInitialSyncDone();
      if (fib) this.#watchConvergence();
      return;
    }
    if (!sameJson(this.#config, r.config)) {
      this.#log.info(`BGP configuration changed: AS ${r.config.asn}, router id ${r.config.routerId}`);
      await this.#speaker.reconfigure(r.config);
      this.#config = r.config;
    }
    if (!sameJson(this.#appliedPeers, r.peers)) {
      this.#log.info(`BGP peers: ${r.peers.map((p) => `${p.id} (${p.kind})`).join(', ') || 'none'}`);
      this.#speaker.setPeers(r.peers);
      this.#appliedPeers = r.peers;
    }
  }

  #maybeInitialSyncDone(): void {
    const s = this.#speaker;
    if (!s || this.#initialSyncSent) return;
    if (this.#opts.originates && !this.#localReady) return;
    this.#initialSyncSent = true;
    s.initialSyncDone();
  }

  /** Sweeps stale kernel routes once every configured peer has converged, or at the timeout. */
  #watchConvergence(): void {
    const settle = this.#opts.settleMs ?? 2_000;
    const timeout = this.#opts.eorTimeoutMs ?? 30_000;
    const check = (): void => {
      this.#eorTimer = undefined;
      if (this.#stopped || this.#fibSynced) return;
      const s = this.#speaker;
      const now = Date.now();
      const peers = s?.status().peers ?? [];
      const waiting = peers.filter((p) => !peerConverged(p, now, settle));
      const timedOut = now - this.#speakerStartedAt >= timeout;
      if (s && waiting.length > 0 && !timedOut) {
        this.#eorTimer = setTimeout(check, 250);
        this.#eorTimer.unref();
        return;
      }
      this.#fibSynced = true;
      if (waiting.length > 0) this.#log.warn(`BGP initial sync: giving up waiting for ${waiting.map((p) => p.id).join(', ')} after ${timeout} ms`);
      this.#opts.fib!.syncDone().then(
        () => this.#log.info('BGP initial sync done: stale kernel routes swept'),
        (err: unknown) => this.#log.warn(`FIB sweep failed: ${errorMessage(err)}`),
      );
    };
    this.#eorTimer = setTimeout(check, 250);
    this.#eorTimer.unref();
  }

  #resync(): void {
    const s = this.#speaker;
    const fib = this.#opts.fib;
    if (fib?.setBlackholes && this.#affinitiesInSync && !this.#stopped) {
      // Drift repair for the blackholes too (the FIB re-reads its own).
      fib.setBlackholes(this.#affinities.confirmed(), true).catch((err: unknown) => this.#log.warn(`block blackholes failed: ${errorMessage(err)}`));
    }
    if (!s || !fib || this.#stopped) return;
    fib.resync(s.fibSnapshot()).catch((err: unknown) => this.#log.warn(`FIB resync failed: ${errorMessage(err)}`));
  }
}
