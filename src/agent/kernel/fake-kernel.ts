/**
 * A stateful in-memory Kernel for unit tests. It keeps links, main-table routes and sysctls, and
 * follows the kernel's rules where the reconcilers depend on them: `add` fails on an existing key
 * whatever its protocol, `replace` overwrites the route with the same key, `del` with a protocol
 * only removes a route with that protocol, deleting a link (or setting it admin-down) removes its
 * routes, and a link's sysctls exist only while the link does.
 *
 * Tests drive it from the outside (addLink, addRoute, deleteRoutes, setSysctl, failOps) to simulate
 * the world and drift. It never spawns anything.
 */
import {
  KernelError,
  MAIN_TABLE,
  canonicalCidr,
  defaultMetric,
  routeOpCommand,
  zeroCounters,
  type Kernel,
  type KernelCounters,
  type KernelRoute,
  type LinkInfo,
  type RouteBatchResult,
  type RouteOp,
  type RouteOpFailure,
} from './kernel.ts';

export interface FakeKernelOptions {
  /** Whether IPv6 sysctls exist (false simulates a kernel booted with ipv6.disable=1). Default true. */
  readonly ipv6?: boolean;
}

export interface FakeLinkOptions {
  readonly adminUp?: boolean;
  readonly operState?: string;
  readonly mac?: string;
}

/** Per-link sysctls a fresh link starts with (the kernel's defaults for the ones routecat sets). */
function linkSysctlDefaults(name: string, ipv6: boolean): [string, string][] {
  const out: [string, string][] = [
    [`net/ipv4/conf/${name}/proxy_arp`, '0'],
    [`net/ipv4/conf/${name}/forwarding`, '0'],
    [`net/ipv4/conf/${name}/rp_filter`, '0'],
    [`net/ipv4/neigh/${name}/proxy_delay`, '80'],
  ];
  if (ipv6) {
    out.push([`net/ipv6/conf/${name}/proxy_ndp`, '0'], [`net/ipv6/conf/${name}/forwarding`, '0'], [`net/ipv6/conf/${name}/accept_ra`, '1']);
  }
  return out;
}

export class FakeKernel implements Kernel {
  readonly #ipv6: boolean;
  readonly #links = new Map<string, { index: number; adminUp: boolean; operState: string; mac?: string }>();
  #routes: KernelRoute[] = [];
  readonly #sysctls = new Map<string, string>();
  readonly #counters: KernelCounters = zeroCounters();
  #nextIndex = 2;
  #failures: { match: (op: RouteOp) => boolean; error: string }[] = [];
  /** Every command applied, in `ip -batch` text, for assertions. */
  readonly commandLog: string[] = [];

  constructor(opts: FakeKernelOptions = {}) {
    this.#ipv6 = opts.ipv6 ?? true;
    this.#links.set('lo', { index: 1, adminUp: true, operState: 'UNKNOWN' });
    this.#sysctls.set('net/ipv4/ip_forward', '0');
    for (const [k, v] of linkSysctlDefaults('lo', this.#ipv6)) this.#sysctls.set(k, v);
    for (const [k, v] of linkSysctlDefaults('all', this.#ipv6)) if (!k.includes('/neigh/')) this.#sysctls.set(k, v);
    for (const [k, v] of linkSysctlDefaults('default', this.#ipv6)) this.#sysctls.set(k, v);
  }

  // --- the world, driven by tests -----------------------------------------------------------------

  addLink(name: string, opts: FakeLinkOptions = {}): LinkInfo {
    if (this.#links.has(name)) throw new Error(`fake kernel: link ${name} exists`);
    const link = {
      index: this.#nextIndex++,
      adminUp: opts.adminUp ?? true,
      operState: opts.operState ?? ((opts.adminUp ?? true) ? 'UP' : 'DOWN'),
      ...(opts.mac !== undefined ? { mac: opts.mac } : {}),
    };
    this.#links.set(name, link);
    for (const [k, v] of linkSysctlDefaults(name, this.#ipv6)) this.#sysctls.set(k, v);
    return { name, ...link };
  }

  removeLink(name: string): void {
    if (!this.#links.delete(name)) throw new Error(`fake kernel: no link ${name}`);
    this.#routes = this.#routes.filter((r) => r.dev !== name);
    for (const k of [...this.#sysctls.keys()]) if (k.split('/')[3] === name) this.#sysctls.delete(k);
  }

  /** Admin-down removes the link's routes, as the kernel does; carrier loss (operState) does not. */
  setLinkState(name: string, state: { adminUp?: boolean; operState?: string }): void {
    const l = this.#links.get(name);
    if (!l) throw new Error(`fake kernel: no link ${name}`);
    if (state.adminUp !== undefined) l.adminUp = state.adminUp;
    if (state.operState !== undefined) l.operState = state.operState;
    else l.operState = l.adminUp ? 'UP' : 'DOWN';
    if (!l.adminUp) this.#routes = this.#routes.filter((r) => r.dev !== name);
  }

  /** Adds a route as somebody else would (any protocol); returns false if the key exists. */
  addRoute(r: { dst: string; dev: string; protocol: number; metric?: number; scope?: string }): boolean {
    const { family, cidr } = canonicalCidr(r.dst);
    const metric = r.metric ?? defaultMetric(family);
    if (this.#routes.some((x) => x.family === family && x.dst === cidr && x.metric === metric)) return false;
    this.#routes.push({
      family,
      dst: cidr,
      dev: r.dev,
      protocol: r.protocol,
      ...(family === 4 ? { scope: r.scope ?? 'link' } : {}),
      metric,
      table: MAIN_TABLE,
    });
    return true;
  }

  /** Removes routes matching the predicate (by hand, behind the agent's back); returns how many. */
  deleteRoutes(pred: (r: KernelRoute) => boolean): number {
    const before = this.#routes.length;
    this.#routes = this.#routes.filter((r) => !pred(r));
    return before - this.#routes.length;
  }

  /** Every route in the main table. */
  routes(): KernelRoute[] {
    return [...this.#routes];
  }

  sysctl(path: string): string | undefined {
    return this.#sysctls.get(path);
  }

  /** Changes a sysctl behind the agent's back (drift). */
  setSysctl(path: string, value: string): void {
    this.#sysctls.set(path, value);
  }

  /** Makes every later op matching `match` fail with `error` until cleared. */
  failOps(match: (op: RouteOp) => boolean, error = 'RTNETLINK answers: Invalid argument'): void {
    this.#failures.push({ match, error });
  }

  clearFailures(): void {
    this.#failures = [];
  }

  // --- Kernel -------------------------------------------------------------------------------------

  async listLinks(): Promise<LinkInfo[]> {
    this.#counters.linkReads++;
    return [...this.#links].map(([name, l]) => ({ name, ...l }));
  }

  async listRoutes(protocol: number): Promise<KernelRoute[]> {
    this.#counters.routeReads++;
    return this.#routes.filter((r) => r.protocol === protocol && r.table === MAIN_TABLE);
  }

  async applyRoutes(ops: readonly RouteOp[]): Promise<RouteBatchResult> {
    const failures: RouteOpFailure[] = [];
    if (ops.length > 0) this.#counters.batches++;
    ops.forEach((op, index) => {
      this.#counters.commands++;
      let error: string | undefined;
      try {
        this.commandLog.push(routeOpCommand(op));
        error = this.#failures.find((f) => f.match(op))?.error ?? this.#apply(op);
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
      if (error !== undefined) failures.push({ index, op, error });
    });
    this.#counters.commandFailures += failures.length;
    return { commands: ops.length, failures, durationMs: 0 };
  }

  readSysctl(path: string): string | undefined {
    this.#counters.sysctlReads++;
    return this.#sysctls.get(path);
  }

  writeSysctl(path: string, value: string): void {
    this.#counters.sysctlWrites++;
    if (!this.#sysctls.has(path)) throw new KernelError('E_SYSCTL', `cannot write ${value} to sysctl ${path}: no such file`);
    this.#sysctls.set(path, value);
  }

  counters(): KernelCounters {
    return { ...this.#counters };
  }

  async close(): Promise<void> {}

  /** Applies one op; returns `ip`'s error message, or undefined on success. */
  #apply(op: RouteOp): string | undefined {
    const { family, cidr } = canonicalCidr(op.route.dst);
    const r = op.route;
    if (!this.#links.has(r.dev)) return `Cannot find device "${r.dev}"`;
    const metric = r.metric ?? defaultMetric(family);
    const sameKey = (x: KernelRoute) => x.family === family && x.dst === cidr && x.metric === metric;
    const route: KernelRoute = {
      family,
      dst: cidr,
      dev: r.dev,
      protocol: r.protocol,
      ...(family === 4 ? { scope: 'link' } : {}),
      metric,
      table: MAIN_TABLE,
    };
    switch (op.op) {
      case 'add':
        if (this.#routes.some(sameKey)) return 'RTNETLINK answers: File exists';
        this.#routes.push(route);
        return undefined;
      case 'replace': {
        const i = this.#routes.findIndex(sameKey);
        if (i >= 0) this.#routes[i] = route;
        else this.#routes.push(route);
        return undefined;
      }
      case 'del': {
        const i = this.#routes.findIndex(
          (x) => x.family === family && x.dst === cidr && x.protocol === r.protocol && x.dev === r.dev && (r.metric === undefined || x.metric === r.metric),
        );
        if (i < 0) return 'RTNETLINK answers: No such process';
        this.#routes.splice(i, 1);
        return undefined;
      }
    }
  }
}
