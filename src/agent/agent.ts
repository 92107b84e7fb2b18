/**
 * The node agent's loop (Felix's shape): datastore updates go to the calculation, which is
 * cheap and does no I/O; a throttled, single-flight apply() does all the kernel work in
 * dependency order — interfaces, then ACLs (sets before rules), then routes — so a workload is
 * never routable before its policy is in place. Nothing of ours is removed before the syncer is
 * InSync. Kernel events and periodic re-reads (routes and interfaces every routeRefreshInterval,
 * ACLs every iptablesRefreshInterval) mark the reconcilers dirty to repair drift.
 */
import type { DataplaneModel } from './model.ts';
import type { SyncStatus, SyncUpdate } from '../datastore/syncer.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface CalculationPart {
  onUpdate(u: { key: string; value: string | null }): void;
  model(): DataplaneModel;
}

export interface ApplyOpts {
  readonly inSync: boolean;
}

/** ACL backend (iptables or nftables). */
export interface AclPart {
  readonly name: string;
  apply(model: DataplaneModel, opts: ApplyOpts): Promise<{ changed: boolean; rulesWritten: number; rulesTotal: number; setsWritten: number; durationMs: number }>;
  /** Re-read the kernel's state so the next apply repairs anything changed by hand. */
  readBack(): Promise<void>;
}

/** Route and interface reconcilers share this shape. */
export interface ReconcilerPart {
  setDesired(model: DataplaneModel): void;
  markDirty(): void;
  apply(opts: ApplyOpts): Promise<{ total: number; changed: number }>;
}

export interface AgentParts {
  readonly calc: CalculationPart;
  readonly acl: AclPart;
  readonly ifaces: ReconcilerPart;
  readonly routes: ReconcilerPart;
  /** Oper state of the host-side interfaces, for endpoint status (undefined: absent). */
  linkUp(iface: string): boolean | undefined;
}

export interface ApplyRecord {
  readonly at: string;
  readonly durationMs: number;
  readonly inSync: boolean;
  readonly error?: string;
  readonly stages: Record<string, number>;
  readonly rules: number;
  readonly routes: number;
}

export interface AgentHooks {
  /** After each apply (metrics, readiness). */
  onApplied?(record: ApplyRecord, model: DataplaneModel): void;
  /** New bad data found in the datastore view. */
  onProblem?(p: { key: string; reason: string }): void;
}

export class NodeAgent {
  readonly #parts: AgentParts;
  readonly #log: Logger;
  readonly #hooks: AgentHooks;
  readonly #minIntervalMs: number;
  #syncStatus: SyncStatus = 'WaitingForDatastore';
  #running = false;
  #pending = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #firstInSyncApply = false;
  #last: ApplyRecord | undefined;
  #model: DataplaneModel | undefined;
  /** The model of the last apply that completed: what the kernel is known to have. */
  #programmed: DataplaneModel | undefined;
  #reported = new Set<string>();
  #idle: Array<() => void> = [];
  #aclDirty = false;
  #seenRevision = 0n;
  #appliedRevision = 0n;

  constructor(parts: AgentParts, log: Logger, hooks: AgentHooks = {}, options: { minIntervalMs?: number } = {}) {
    this.#parts = parts;
    this.#log = log;
    this.#hooks = hooks;
    this.#minIntervalMs = options.minIntervalMs ?? 20;
  }

  get syncStatus(): SyncStatus {
    return this.#syncStatus;
  }
  /** InSync and one complete apply done since. */
  get ready(): boolean {
    return this.#firstInSyncApply && this.#syncStatus === 'InSync' && !this.#last?.error;
  }
  get lastApply(): ApplyRecord | undefined {
    return this.#last;
  }
  get model(): DataplaneModel | undefined {
    return this.#model;
  }
  /** The highest datastore revision whose effects are fully programmed. */
  get appliedRevision(): string {
    return String(this.#appliedRevision);
  }

  onUpdates(updates: readonly SyncUpdate[]): void {
    for (const u of updates) {
      this.#parts.calc.onUpdate({ key: u.key, value: u.value });
      const rev = BigInt(u.revision);
      if (rev > this.#seenRevision) this.#seenRevision = rev;
    }
    this.schedule();
  }

  onSyncStatus(s: SyncStatus): void {
    this.#syncStatus = s;
    this.schedule();
  }

  /** Kernel changed under us (monitor event) or the periodic re-read is due. */
  kernelChanged(): void {
    this.#parts.routes.markDirty();
    this.#parts.ifaces.markDirty();
    this.schedule();
  }

  /** The periodic re-read of routes and interfaces (routeRefreshInterval). */
  periodicResync(): void {
    this.kernelChanged();
  }

  /**
   * The periodic re-read of the ACL dataplane (iptablesRefreshInterval, Felix's default 90 s):
   * a full iptables-save / `nft list table` of a large ruleset takes seconds, so it runs much less
   * often than the route re-read.
   */
  aclResync(): void {
    this.#aclDirty = true;
    this.schedule();
  }

  schedule(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#pending = true;
      return;
    }
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#run();
    }, this.#minIntervalMs);
  }

  /** Resolves when no apply is running or queued (tests and benchmarks). */
  whenIdle(): Promise<void> {
    if (!this.#running && !this.#timer && !this.#pending) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #run(): Promise<void> {
    this.#running = true;
    this.#pending = false;
    try {
      await this.applyOnce();
    } finally {
      this.#running = false;
      if (this.#pending && !this.#stopped) this.schedule();
      else if (!this.#timer) for (const f of this.#idle.splice(0)) f();
    }
  }

  async applyOnce(): Promise<ApplyRecord> {
    const inSync = this.#syncStatus === 'InSync';
    const revision = this.#seenRevision;
    const t0 = performance.now();
    const stages: Record<string, number> = {};
    const stage = async <T>(name: string, f: () => Promise<T> | T): Promise<T> => {
      const s = performance.now();
      try {
        return await f();
      } finally {
        stages[name] = Math.round((performance.now() - s) * 10) / 10;
      }
    };
    let error: string | undefined;
    let rules = this.#last?.rules ?? 0;
    let routes = this.#last?.routes ?? 0;
    try {
      const model = await stage('calc', () => this.#parts.calc.model());
      this.#model = model;
      for (const p of model.problems) {
        const id = `${p.key}\0${p.reason}`;
        if (this.#reported.has(id)) continue;
        this.#reported.add(id);
        this.#log.warn(`skipping bad data at ${p.key}: ${p.reason}`);
        this.#hooks.onProblem?.(p);
      }
      this.#parts.ifaces.setDesired(model);
      this.#parts.routes.setDesired(model);
      // Interfaces first (proxy ARP, forwarding), then policy, then routes.
      await stage('interfaces', () => this.#parts.ifaces.apply({ inSync }));
      if (this.#aclDirty) {
        this.#aclDirty = false;
        await stage('aclReadBack', () => this.#parts.acl.readBack());
      }
      const acl = await stage('acl', () => this.#parts.acl.apply(model, { inSync }));
      rules = acl.rulesTotal;
      const r = await stage('routes', () => this.#parts.routes.apply({ inSync }));
      routes = r.total;
      this.#programmed = model;
    } catch (err) {
      error = errorMessage(err);
      this.#log.error(`apply failed (will retry): ${error}`);
      // Retry soon: read everything back next time.
      this.#aclDirty = true;
      this.#parts.routes.markDirty();
      this.#parts.ifaces.markDirty();
      setTimeout(() => this.schedule(), 1_000).unref();
    }
    const record: ApplyRecord = {
      at: new Date().toISOString(),
      durationMs: Math.round((performance.now() - t0) * 10) / 10,
      inSync,
      error,
      stages,
      rules,
      routes,
    };
    this.#last = record;
    if (inSync && !error) {
      this.#firstInSyncApply = true;
      if (revision > this.#appliedRevision) this.#appliedRevision = revision;
    }
    if (this.#model) this.#hooks.onApplied?.(record, this.#model);
    return record;
  }

  /**
   * Endpoint id -> up/down from the host-side interface's oper state, for the endpoints whose
   * interface, policy and route are programmed (an endpoint still being applied is not reported:
   * the CNI plugin waits for "up" before it lets the workload start).
   */
  endpointStatuses(): Map<string, 'up' | 'down'> {
    const out = new Map<string, 'up' | 'down'>();
    for (const ep of this.#programmed?.endpoints.values() ?? []) {
      if (ep.type !== 'workload') continue;
      out.set(ep.id, this.#parts.linkUp(ep.iface) ? 'up' : 'down');
    }
    return out;
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const f of this.#idle.splice(0)) f();
  }
}
