/**
 * Programs the host's routes to its local workloads: for every workload endpoint whose interface
 * exists and is up, one route per address — `<cidr> dev <iface> proto ROUTE_PROTO scope link` in
 * the main table (a /32 or /128 normally; a wider net is routed as given).
 *
 * Desired vs actual as data: setDesired() only computes (no I/O); apply() reads the kernel's routes
 * of our protocol when the view is dirty (first apply, markDirty() after a monitor event or periodic
 * resync, or after a failed command), otherwise trusts its cache, which it updates with every
 * command that succeeded. It then writes the smallest change as one batch: `add` for missing
 * routes, `replace` only where the kernel's route with that key is ours, `del` (naming our protocol)
 * for routes of ours no longer wanted — and deletes only when the caller says the datastore is in
 * sync. A route that does not carry our protocol number is never replaced or removed: `add` fails
 * against it instead (reported as a conflict).
 */
import { logger, type Logger } from '../log.ts';
import { errorMessage } from '../errors.ts';
import type { DataplaneModel, LocalEndpoint } from './model.ts';
import {
  ROUTE_PROTO,
  canonicalCidr,
  counterDelta,
  defaultMetric,
  isValidIfaceName,
  linkIsUp,
  routeKey,
  type Kernel,
  type KernelRoute,
  type LinkInfo,
  type RouteOp,
  type RouteSpec,
} from './kernel/kernel.ts';

export interface RouteReconcilerOptions {
  readonly kernel: Kernel;
  /** Route protocol number owned by this reconciler; default ROUTE_PROTO (192). */
  readonly protocol?: number;
  readonly log?: Logger;
}

export interface ApplyOptions {
  /** The datastore view is complete: routes of ours that are no longer wanted may be deleted. */
  readonly inSync: boolean;
}

/** What setDesired() accepts: the whole model, its endpoint map, or a list of endpoints. */
export type EndpointsInput = DataplaneModel | ReadonlyMap<string, LocalEndpoint> | readonly LocalEndpoint[];

export function endpointsOf(input: EndpointsInput): LocalEndpoint[] {
  if (Array.isArray(input)) return [...(input as readonly LocalEndpoint[])];
  if (input instanceof Map) return [...(input as ReadonlyMap<string, LocalEndpoint>).values()];
  return [...(input as DataplaneModel).endpoints.values()];
}

export interface RouteApplyStats {
  /** Routes in place after this apply (== desired - failed adds), and routes changed. */
  readonly total: number;
  readonly changed: number;
  /** Whether this apply read the kernel's routes (dirty view) / its links. */
  readonly readRoutes: boolean;
  readonly readLinks: boolean;
  /** Routes wanted now (endpoint interface present and up). */
  readonly desired: number;
  /** Endpoint routes not wanted now because the interface is missing or down. */
  readonly waitingForIface: number;
  /** Destinations claimed by more than one endpoint (the first endpoint id wins). */
  readonly conflicts: number;
  /** Endpoint addresses that are not valid CIDRs (skipped). */
  readonly invalid: number;
  /** Routes of ours found in the kernel (before this apply's changes). */
  readonly actual: number;
  readonly added: number;
  readonly replaced: number;
  readonly deleted: number;
  /** Routes of ours not wanted, kept because the datastore is not in sync. */
  readonly deletesDeferred: number;
  readonly failed: number;
  /** First few error messages, `<command>: <error>`. */
  readonly errors: readonly string[];
  /** Commands written, batches written and processes spawned by this apply. */
  readonly commands: number;
  readonly batches: number;
  readonly processesSpawned: number;
  readonly durationsMs: { readonly read: number; readonly diff: number; readonly write: number; readonly total: number };
}

interface EndpointRoute {
  readonly family: 4 | 6;
  readonly dst: string;
  readonly dev: string;
  readonly endpointId: string;
}

const MAX_ERRORS = 20;

export class RouteReconciler {
  readonly #kernel: Kernel;
  readonly #protocol: number;
  readonly #log: Logger;
  /** Per endpoint object (the model keeps unchanged endpoints identical), its parsed routes. */
  #parsed = new WeakMap<LocalEndpoint, { routes: EndpointRoute[]; invalid: number }>();
  /** dst -> route, first endpoint id wins. */
  #wanted = new Map<string, EndpointRoute>();
  #conflicts = 0;
  #invalid = 0;
  #links: Map<string, LinkInfo> | undefined;
  /** routeKey -> route of ours, as the kernel has it (read, then updated by our own writes). */
  #actual: Map<string, KernelRoute> | undefined;
  #dirty = true;
  #serial: Promise<unknown> = Promise.resolve();

  constructor(opts: RouteReconcilerOptions) {
    this.#kernel = opts.kernel;
    this.#protocol = opts.protocol ?? ROUTE_PROTO;
    this.#log = opts.log ?? logger('routes');
  }

  get dirty(): boolean {
    return this.#dirty;
  }

  /** The local endpoints (the model, its endpoint map, or a list). Cheap: no I/O. */
  setDesired(input: EndpointsInput): void {
    const list = endpointsOf(input);
    list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const wanted = new Map<string, EndpointRoute>();
    let conflicts = 0;
    let invalid = 0;
    for (const ep of list) {
      if (ep.type !== 'workload' || !isValidIfaceName(ep.iface)) continue;
      let parsed = this.#parsed.get(ep);
      if (!parsed) {
        parsed = parseEndpointRoutes(ep);
        this.#parsed.set(ep, parsed);
      }
      invalid += parsed.invalid;
      for (const r of parsed.routes) {
        const prev = wanted.get(r.dst);
        if (prev) {
          if (prev.dev !== r.dev || prev.endpointId !== r.endpointId) conflicts++;
          continue;
        }
        wanted.set(r.dst, r);
      }
    }
    if (conflicts > 0 && conflicts !== this.#conflicts) this.#log.warn(`${conflicts} route destinations claimed by more than one endpoint; the first endpoint id wins`);
    this.#wanted = wanted;
    this.#conflicts = conflicts;
    this.#invalid = invalid;
  }

  /** The kernel may have changed behind our back: the next apply re-reads links and routes. */
  markDirty(reason?: string): void {
    if (!this.#dirty && reason) this.#log.debug(`dirty: ${reason}`);
    this.#dirty = true;
  }

  /**
   * A monitor saw a route of our protocol removed. If our view still has it, somebody else removed
   * it: mark dirty and return true. Otherwise it is the echo of our own delete (or of a route we
   * never had) and nothing needs doing. Cheap: no I/O.
   */
  routeRemoved(dst: string, dev?: string, metric?: number): boolean {
    let key: string | undefined;
    try {
      const { family, cidr } = canonicalCidr(dst);
      key = routeKey({ family, dst: cidr, metric: metric ?? defaultMetric(family) });
    } catch {
      key = undefined;
    }
    const r = key === undefined ? undefined : this.#actual?.get(key);
    const known = this.#actual === undefined || key === undefined || (r !== undefined && (dev === undefined || r.dev === dev));
    if (known) this.markDirty(`route ${dst} removed`);
    return known;
  }

  /** Brings the kernel's routes of our protocol to the desired state. Applies never overlap. */
  apply(opts: ApplyOptions): Promise<RouteApplyStats> {
    const run = this.#serial.then(() => this.#apply(opts));
    this.#serial = run.catch(() => undefined);
    return run;
  }

  async #apply(opts: ApplyOptions): Promise<RouteApplyStats> {
    const t0 = performance.now();
    const c0 = this.#kernel.counters();
    const errors: string[] = [];
    let readRoutes = false;
    let readLinks = false;

    if (this.#dirty || !this.#actual || !this.#links) {
      this.#dirty = false;
      try {
        const [links, routes] = await Promise.all([this.#kernel.listLinks(), this.#kernel.listRoutes(this.#protocol)]);
        this.#links = new Map(links.map((l) => [l.name, l]));
        this.#actual = new Map(routes.map((r) => [routeKey(r), r]));
      } catch (err) {
        this.#dirty = true;
        throw err;
      }
      readRoutes = readLinks = true;
    } else if (this.#someWantedIfaceUnusable()) {
      // An interface we wait for may have appeared without anybody telling us.
      const before = this.#links;
      this.#links = new Map((await this.#kernel.listLinks()).map((l) => [l.name, l]));
      readLinks = true;
      // If a link our cached routes use went away or down, the kernel dropped those routes.
      for (const r of this.#actual.values()) {
        const was = before.get(r.dev);
        const now = this.#links.get(r.dev);
        if (!now || !was || now.index !== was.index || now.adminUp !== was.adminUp) {
          this.#actual = new Map((await this.#kernel.listRoutes(this.#protocol)).map((x) => [routeKey(x), x]));
          readRoutes = true;
          break;
        }
      }
    }
    const links = this.#links!;
    const actual = this.#actual!;
    const t1 = performance.now();

    // --- diff -------------------------------------------------------------------------------------
    const actualByDst = new Map<string, KernelRoute[]>();
    for (const r of actual.values()) {
      const list = actualByDst.get(r.dst);
      if (list) list.push(r);
      else actualByDst.set(r.dst, [r]);
    }
    const deletes: RouteOp[] = [];
    const upserts: RouteOp[] = [];
    let desired = 0;
    let waiting = 0;
    let deferred = 0;
    const stale = (r: KernelRoute) => {
      if (opts.inSync) deletes.push({ op: 'del', route: { family: r.family, dst: r.dst, dev: r.dev, protocol: this.#protocol, metric: r.metric } });
      else deferred++;
    };
    for (const w of this.#wanted.values()) {
      const link = links.get(w.dev);
      const have = actualByDst.get(w.dst) ?? [];
      if (!link || !linkIsUp(link)) {
        waiting++;
        continue;
      }
      desired++;
      const spec: RouteSpec = { family: w.family, dst: w.dst, dev: w.dev, protocol: this.#protocol };
      const metric = defaultMetric(w.family);
      const good = have.find((r) => r.dev === w.dev && r.metric === metric && r.gateway === undefined && (r.family === 6 || r.scope === 'link'));
      if (!good) {
        const sameKey = have.some((r) => r.metric === metric);
        upserts.push({ op: sameKey ? 'replace' : 'add', route: spec });
      }
      for (const r of have) if (r !== good && r.metric !== metric) stale(r);
    }
    for (const [dst, have] of actualByDst) {
      const w = this.#wanted.get(dst);
      const link = w && links.get(w.dev);
      if (w && link && linkIsUp(link)) continue;
      for (const r of have) stale(r);
    }
    // Deletes first (dependency order: nothing we add depends on a route we remove).
    const ops = [...deletes, ...upserts];
    const t2 = performance.now();

    // --- write ------------------------------------------------------------------------------------
    let added = 0;
    let replaced = 0;
    let deleted = 0;
    let failed = 0;
    if (ops.length > 0) {
      try {
        const res = await this.#kernel.applyRoutes(ops);
        const failedIdx = new Set<number>();
        for (const f of res.failures) {
          failedIdx.add(f.index);
          if (errors.length < MAX_ERRORS) errors.push(`${describeOp(f.op)}: ${f.error}`);
        }
        failed = res.failures.length;
        ops.forEach((op, i) => {
          if (failedIdx.has(i)) return;
          const r = op.route;
          if (op.op === 'del') {
            actual.delete(routeKey({ family: r.family, dst: r.dst, metric: r.metric }));
            deleted++;
          } else {
            const route: KernelRoute = {
              family: r.family,
              dst: r.dst,
              dev: r.dev,
              protocol: this.#protocol,
              ...(r.family === 4 ? { scope: 'link' } : {}),
              metric: defaultMetric(r.family),
              table: 254,
            };
            actual.set(routeKey(route), route);
            if (op.op === 'add') added++;
            else replaced++;
          }
        });
        if (failed > 0) {
          this.#dirty = true;
          this.#log.warn(`${failed} of ${ops.length} route commands failed, e.g. ${errors[0]}`);
        }
      } catch (err) {
        // Which commands ran is unknown: read everything again next time.
        this.#dirty = true;
        failed = ops.length;
        errors.push(`route batch of ${ops.length} commands: ${errorMessage(err)}`);
        this.#log.warn(`route batch failed: ${errorMessage(err)}`);
      }
    }
    const t3 = performance.now();
    const c = counterDelta(this.#kernel.counters(), c0);
    if (added + replaced + deleted > 0) {
      this.#log.info(`routes: +${added} ~${replaced} -${deleted} (${desired} desired, ${deferred} deletes deferred) in ${(t3 - t0).toFixed(1)} ms`);
    }
    let total = 0;
    for (const w of this.#wanted.values()) {
      const l = links.get(w.dev);
      if (l && linkIsUp(l) && actual.has(routeKey(w)) && actual.get(routeKey(w))!.dev === w.dev) total++;
    }
    return {
      total,
      changed: added + replaced + deleted,
      readRoutes,
      readLinks,
      desired,
      waitingForIface: waiting,
      conflicts: this.#conflicts,
      invalid: this.#invalid,
      actual: [...actualByDst.values()].reduce((n, l) => n + l.length, 0),
      added,
      replaced,
      deleted,
      deletesDeferred: deferred,
      failed,
      errors,
      commands: c.commands,
      batches: c.batches,
      processesSpawned: c.processesSpawned,
      durationsMs: { read: t1 - t0, diff: t2 - t1, write: t3 - t2, total: t3 - t0 },
    };
  }

  #someWantedIfaceUnusable(): boolean {
    const links = this.#links!;
    for (const w of this.#wanted.values()) {
      const l = links.get(w.dev);
      if (!l || !linkIsUp(l)) return true;
    }
    return false;
  }
}

function parseEndpointRoutes(ep: LocalEndpoint): { routes: EndpointRoute[]; invalid: number } {
  const routes: EndpointRoute[] = [];
  let invalid = 0;
  for (const [nets, fam] of [
    [ep.ipv4Nets, 4],
    [ep.ipv6Nets, 6],
  ] as const) {
    for (const net of nets) {
      try {
        const { family, cidr } = canonicalCidr(net);
        if (family !== fam) {
          invalid++;
          continue;
        }
        routes.push({ family, dst: cidr, dev: ep.iface, endpointId: ep.id });
      } catch {
        invalid++;
      }
    }
  }
  return { routes, invalid };
}

function describeOp(op: RouteOp): string {
  const r = op.route;
  return `route ${op.op} ${r.dst} dev ${r.dev}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
}
