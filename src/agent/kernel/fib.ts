/**
 * The BGP FIB writer: puts the routes the BGP speaker learned (FibChange batches) into the main
 * routing table of the current network namespace, each carrying BGP_ROUTE_PROTO (193), and exports
 * kernel routes of chosen protocols for the node to advertise.
 *
 * It owns only proto-193 routes. Every write is `add` (which the kernel refuses when any route with
 * the same key exists), `replace` only where the kernel's route with that key is known to be ours,
 * or `del ... proto 193` (which the kernel refuses for a route that is not ours). A prefix that has a
 * route of another protocol in the main table (connected, static, the agent's 192, ...) is skipped
 * and counted, never overwritten.
 *
 * Next hops are resolved the way BIRD does with `gateway recursive`: a next hop whose best route has
 * no gateway (a connected or device route) is used as it is; otherwise the route is installed via
 * that route's gateway(s). A next hop that resolves nowhere, or only through one of our own routes,
 * keeps its routes pending; they are retried periodically and on retryPending(); the owner calls
 * refreshNextHops() when routes or links change (the kernel monitor), which re-resolves every next
 * hop and rewrites only the routes whose kernel next hops changed.
 *
 * Block blackholes (route aggregation): setBlackholes() keeps `blackhole <block> proto 193` routes
 * for exactly the given prefixes (added where missing, ours not listed deleted once the list is
 * complete); they are kept apart from the BGP routes (never stale, never swept by syncDone).
 *
 * Graceful restart: start() remembers the proto-193 routes already in the kernel as stale and keeps
 * them; apply()/resync() confirm them; syncDone() removes those still unconfirmed. close() leaves
 * every route in place.
 *
 * Layers: pure functions (validation, next-hop resolution, planning, command text) are exported and
 * tested without a kernel; BgpFib keeps the state and talks to the kernel through the narrow
 * FibKernel interface (LinuxFibKernel: `ip -json` reads, one long-lived `ip -batch` for writes).
 */
import { execFile } from 'node:child_process';
import ipaddr from 'ipaddr.js';
import { RoutecatError, errorMessage } from '../../errors.ts';
import { logger, type Logger } from '../../log.ts';
import type { FibChange } from '../../bgp/speaker-api.ts';
import { IpBatch } from './ip-batch.ts';
import { canonicalCidr, defaultMetric, isValidIfaceName } from './kernel.ts';

/** rtm_protocol of every route the BGP FIB writer programs (the agent's workload routes use 192). */
export const BGP_ROUTE_PROTO = 193;

export class FibError extends RoutecatError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'FibError';
  }
}

// --- validation --------------------------------------------------------------------------------

/** A FibChange after validation: canonical prefix, canonical next hops (deduplicated, sorted). */
export interface ValidFibChange {
  readonly prefix: string;
  readonly family: 4 | 6;
  readonly nextHops: readonly string[];
}

/**
 * Canonical next-hop text: IPv4 dotted quad, IPv6 RFC 5952. An IPv6 link-local next hop needs its
 * interface as a zone (`fe80::1%eth0`); the result keeps it. Throws FibError E_FIB_BAD_NEXT_HOP.
 */
export function canonicalNextHop(text: string, family: 4 | 6, prefix = ''): string {
  const where = prefix ? ` of route ${prefix}` : '';
  const bad = (why: string) => new FibError('E_FIB_BAD_NEXT_HOP', `invalid next hop '${text}'${where}: ${why}`);
  if (typeof text !== 'string') throw bad('not a string');
  if (family === 4) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(text)) throw bad('not an IPv4 address');
    const a = ipaddr.IPv4.parse(text);
    const range = a.range();
    if (range === 'unspecified' || range === 'broadcast' || range === 'multicast' || range === 'loopback') throw bad(`${range} address`);
    return a.toString();
  }
  if (!text.includes(':') || !ipaddr.IPv6.isValid(text)) throw bad('not an IPv6 address');
  const a = ipaddr.IPv6.parse(text);
  const range = a.range();
  if (range === 'unspecified' || range === 'multicast' || range === 'loopback') throw bad(`${range} address`);
  if (range === 'ipv4Mapped') throw bad('IPv4-mapped address (IPv4 next hops for IPv6 routes are not supported)');
  const zone = a.zoneId;
  if (range === 'linkLocal') {
    if (zone === undefined) throw bad('a link-local next hop needs its interface as a zone (fe80::1%eth0)');
    if (!isValidIfaceName(zone)) throw bad(`invalid interface name '${zone}'`);
    return a.toRFC5952String();
  }
  if (zone !== undefined) throw bad('a zone is allowed only on a link-local address');
  return a.toRFC5952String();
}

/**
 * Validates one FibChange: the prefix is a CIDR of the stated family with no host bits set, every
 * next hop an address of the same family. Throws FibError E_FIB_BAD_CHANGE naming the value.
 */
export function validateFibChange(c: FibChange): ValidFibChange {
  if (c === null || typeof c !== 'object') throw new FibError('E_FIB_BAD_CHANGE', `FIB change is not an object: ${String(c)}`);
  if (c.family !== 4 && c.family !== 6) throw new FibError('E_FIB_BAD_CHANGE', `FIB change for '${c.prefix}': family must be 4 or 6, not ${String(c.family)}`);
  if (typeof c.prefix !== 'string' || !c.prefix.includes('/')) {
    throw new FibError('E_FIB_BAD_CHANGE', `invalid prefix '${String(c.prefix)}': a CIDR with an explicit length is required`);
  }
  let canon: { family: 4 | 6; cidr: string };
  const fast = c.family === 4 ? fastCanonicalV4(c.prefix) : undefined;
  if (fast !== undefined) canon = { family: 4, cidr: fast };
  else {
    try {
      canon = canonicalCidr(c.prefix);
    } catch (err) {
      throw new FibError('E_FIB_BAD_CHANGE', errorMessage(err).replace(/^invalid CIDR/, 'invalid prefix'), { cause: err });
    }
    if (canon.family !== c.family) {
      throw new FibError('E_FIB_BAD_CHANGE', `prefix '${c.prefix}' is IPv${canon.family}, but the change says family ${c.family}`);
    }
    if (sameAddressText(canon.cidr, c.prefix) === false) {
      throw new FibError('E_FIB_BAD_CHANGE', `prefix '${c.prefix}' has host bits set (the network is ${canon.cidr})`);
    }
  }
  if (!Array.isArray(c.nextHops)) throw new FibError('E_FIB_BAD_CHANGE', `FIB change for '${c.prefix}': nextHops must be an array`);
  if (c.nextHops.length === 1) return { prefix: canon.cidr, family: c.family, nextHops: [cachedNextHop(c.nextHops[0], c.family, canon.cidr)] };
  const hops = new Set<string>();
  for (const nh of c.nextHops) hops.add(cachedNextHop(nh, c.family, canon.cidr));
  return { prefix: canon.cidr, family: c.family, nextHops: [...hops].sort() };
}

const V4_CIDR_RE = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\/(0|[1-9]\d?)$/;

/**
 * The common case without ipaddr.js (a million routes make it matter): IPv4 CIDR text that is
 * already canonical (no leading zeros, length 0..32, no host bits) is returned as it is;
 * undefined means "take the general path", which also produces the error messages.
 */
export function fastCanonicalV4(text: string): string | undefined {
  const m = V4_CIDR_RE.exec(text);
  if (!m) return undefined;
  const len = Number(m[5]);
  if (len > 32) return undefined;
  let addr = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255) return undefined;
    addr = addr * 256 + octet;
  }
  return addr % 2 ** (32 - len) === 0 ? text : undefined;
}

/** Canonical next hops already seen (next hops repeat across many routes): `family|text` -> canonical. */
const nextHopCache = new Map<string, string>();

/** canonicalNextHop, remembering valid results (a bounded cache; errors are never cached). */
function cachedNextHop(text: string, family: 4 | 6, prefix: string): string {
  const key = typeof text === 'string' ? `${family}|${text}` : undefined;
  const hit = key === undefined ? undefined : nextHopCache.get(key);
  if (hit !== undefined) return hit;
  const canon = canonicalNextHop(text, family, prefix);
  if (nextHopCache.size >= 4096) nextHopCache.clear();
  nextHopCache.set(key!, canon);
  return canon;
}

/** Whether the address part of two CIDRs is the same address (false: host bits were cleared). */
function sameAddressText(canonical: string, given: string): boolean {
  const a = canonical.slice(0, canonical.indexOf('/'));
  const b = given.trim().slice(0, given.trim().indexOf('/'));
  try {
    return ipaddr.parse(a).toNormalizedString() === ipaddr.parse(b).toNormalizedString();
  } catch {
    return false;
  }
}

// --- kernel view -------------------------------------------------------------------------------

/** A main-table route as the FIB writer reads it. */
export interface FibKernelRoute {
  readonly family: 4 | 6;
  /** Canonical CIDR. */
  readonly dst: string;
  readonly protocol: number;
  readonly metric: number;
  /** `unicast`, `local`, `blackhole`, `unreachable`, ... */
  readonly type: string;
  /** Gateways (one, or each of a multipath route), canonical, sorted; link-local ones carry `%dev`. */
  readonly gateways: readonly string[];
  /** Device of a single-path route. */
  readonly dev?: string;
}

/** The kernel as the FIB writer needs it (implemented by LinuxFibKernel, faked in unit tests). */
export interface FibKernel {
  /** Main-table routes of both families; only those of `protocol` when given. */
  readRoutes(protocol?: number): Promise<FibKernelRoute[]>;
  /** For each address, the route the kernel would use to reach it (`ip route get fibmatch`); undefined: unreachable. */
  lookup(addrs: readonly string[]): Promise<Map<string, FibKernelRoute | undefined>>;
  /** Runs the commands (`ip -batch` lines) in order as one batch; returns the failed ones. */
  write(commands: readonly string[]): Promise<readonly { readonly index: number; readonly error: string }[]>;
  close(): Promise<void>;
}

/** Sorted hop list -> the text used to compare routes. */
export function hopsKey(hops: readonly string[]): string {
  return hops.join(',');
}

// --- next-hop resolution ------------------------------------------------------------------------

export type NextHopResolution =
  | { readonly ok: true; readonly hops: readonly string[]; readonly recursive: boolean }
  | { readonly ok: false; readonly reason: string };

/**
 * How one BGP next hop resolves, given the kernel's best route to it (`ip route get fibmatch`):
 * a route without gateway (connected or device route) -> the next hop itself; a route with
 * gateway(s) -> those gateways (recursive); none, a non-unicast route, or one of our own routes
 * (no resolution through BGP routes) -> unresolved.
 */
export function resolveNextHop(nextHop: string, route: FibKernelRoute | undefined, ownProtocol = BGP_ROUTE_PROTO): NextHopResolution {
  if (nextHop.includes('%')) return { ok: true, hops: [nextHop], recursive: false };
  if (!route) return { ok: false, reason: 'no route to it' };
  if (route.type !== 'unicast') return { ok: false, reason: `its route ${route.dst} is of type ${route.type}` };
  if (route.protocol === ownProtocol) return { ok: false, reason: `its route ${route.dst} is a BGP route (proto ${ownProtocol})` };
  if (route.gateways.length === 0) return { ok: true, hops: [nextHop], recursive: false };
  return { ok: true, hops: route.gateways, recursive: true };
}

/** Text that is equal for equal resolutions. */
export function resolutionKey(r: NextHopResolution): string {
  return r.ok ? `ok:${hopsKey(r.hops)}` : 'unresolved';
}

/** The kernel next hops of a route whose BGP next hops resolve as given; `unresolved` lists the others. */
export function kernelHops(
  nextHops: readonly string[],
  resolutions: ReadonlyMap<string, NextHopResolution>,
): { hops: string[]; unresolved: string[] } {
  const hops = new Set<string>();
  const unresolved: string[] = [];
  for (const nh of nextHops) {
    const r = resolutions.get(nh);
    if (r?.ok) for (const h of r.hops) hops.add(h);
    else unresolved.push(nh);
  }
  return { hops: [...hops].sort(), unresolved };
}

// --- planning ------------------------------------------------------------------------------------

export type FibOp =
  | { readonly op: 'add' | 'replace'; readonly prefix: string; readonly family: 4 | 6; readonly hops: readonly string[] }
  | { readonly op: 'del'; readonly prefix: string; readonly family: 4 | 6; readonly metric?: number };

/** One route to decide: the kernel hops it should have; empty: it must not exist. */
export interface FibTarget {
  readonly prefix: string;
  readonly family: 4 | 6;
  readonly hops: readonly string[];
}

/** What the writer knows of the kernel: our routes (prefix -> hopsKey) and prefixes with foreign routes. */
export interface FibView {
  readonly installed: ReadonlyMap<string, string>;
  readonly foreign: ReadonlySet<string>;
}

export interface FibPlan {
  readonly ops: FibOp[];
  /** Prefixes skipped because a route of another protocol exists for them. */
  readonly foreign: string[];
  readonly unchanged: number;
}

/**
 * The smallest change that gives each target its hops: nothing when the kernel already has it,
 * `replace` where our route exists, `add` where none of ours does (and no foreign one: skipped),
 * `del` of our route when the target has no hops.
 */
export function planRoutes(targets: Iterable<FibTarget>, view: FibView): FibPlan {
  const ops: FibOp[] = [];
  const foreign: string[] = [];
  let unchanged = 0;
  for (const t of targets) {
    const have = view.installed.get(t.prefix);
    if (t.hops.length === 0) {
      if (have !== undefined) ops.push({ op: 'del', prefix: t.prefix, family: t.family });
      else unchanged++;
      continue;
    }
    if (have === undefined) {
      if (view.foreign.has(t.prefix)) foreign.push(t.prefix);
      else ops.push({ op: 'add', prefix: t.prefix, family: t.family, hops: t.hops });
    } else if (have === hopsKey(t.hops)) unchanged++;
    else ops.push({ op: 'replace', prefix: t.prefix, family: t.family, hops: t.hops });
  }
  return { ops, foreign, unchanged };
}

/**
 * Drift repair: `wanted` targets (prefix -> target) against the kernel as read; our routes not
 * wanted are deleted unless `keep` has them (stale routes before syncDone).
 */
export function planResync(wanted: ReadonlyMap<string, FibTarget>, view: FibView, keep: ReadonlySet<string> = new Set()): FibPlan {
  const plan = planRoutes(wanted.values(), view);
  for (const prefix of view.installed.keys()) {
    if (!wanted.has(prefix) && !keep.has(prefix)) plan.ops.push({ op: 'del', prefix, family: prefix.includes(':') ? 6 : 4 });
  }
  return plan;
}

/** Stale sweep: the deletes of stale prefixes that are still ours in the kernel and not wanted. */
export function planSweep(stale: Iterable<string>, view: FibView, wanted: ReadonlySet<string> | ReadonlyMap<string, unknown>): FibOp[] {
  const ops: FibOp[] = [];
  for (const prefix of stale) {
    if (wanted.has(prefix) || !view.installed.has(prefix)) continue;
    ops.push({ op: 'del', prefix, family: prefix.includes(':') ? 6 : 4 });
  }
  return ops;
}

function hopWords(hop: string): string[] {
  const pct = hop.indexOf('%');
  return pct < 0 ? ['via', hop] : ['via', hop.slice(0, pct), 'dev', hop.slice(pct + 1)];
}

/**
 * The `ip -batch` line of one op (no `-6`: the family follows from the prefix). One hop:
 * `route replace P via NH proto 193 table main`; several: one multipath route
 * `route replace P proto 193 table main nexthop via A nexthop via B` (`nexthop` must come last);
 * delete: `route del P proto 193 table main`, so the kernel refuses to delete a foreign route.
 */
export function fibOpCommand(op: FibOp, protocol = BGP_ROUTE_PROTO): string {
  const fast = op.family === 4 ? fastCanonicalV4(op.prefix) : undefined;
  const { cidr, family } = fast !== undefined ? { cidr: fast, family: 4 as const } : canonicalCidr(op.prefix);
  if (cidr !== op.prefix || family !== op.family) throw new FibError('E_FIB_BAD_OP', `FIB op with a non-canonical prefix '${op.prefix}'`);
  if (!Number.isInteger(protocol) || protocol < 1 || protocol > 255) throw new FibError('E_FIB_BAD_OP', `invalid route protocol ${protocol}`);
  const tail = ['proto', String(protocol), 'table', 'main'];
  if (op.op === 'del') {
    if (op.metric !== undefined) tail.push('metric', String(op.metric));
    return ['route', 'del', cidr, ...tail].join(' ');
  }
  if (op.hops.length === 0) throw new FibError('E_FIB_BAD_OP', `FIB ${op.op} of ${cidr} without next hops`);
  for (const h of op.hops) {
    if (cachedNextHop(h, family, cidr) !== h) throw new FibError('E_FIB_BAD_OP', `FIB ${op.op} of ${cidr} with a non-canonical next hop '${h}'`);
  }
  if (op.hops.length === 1) return ['route', op.op, cidr, ...hopWords(op.hops[0]), ...tail].join(' ');
  return ['route', op.op, cidr, ...tail, ...op.hops.flatMap((h) => ['nexthop', ...hopWords(h)])].join(' ');
}

/**
 * The `ip -batch` line of a block blackhole: `route add blackhole P proto 193 table main` or
 * `route del blackhole P proto 193 table main` (the kernel refuses to delete a route of another
 * protocol, or of another type, with it).
 */
export function blackholeCommand(op: 'add' | 'del', prefix: string, protocol = BGP_ROUTE_PROTO): string {
  const { cidr } = canonicalCidr(prefix);
  if (cidr !== prefix) throw new FibError('E_FIB_BAD_OP', `blackhole with a non-canonical prefix '${prefix}'`);
  if (!Number.isInteger(protocol) || protocol < 1 || protocol > 255) throw new FibError('E_FIB_BAD_OP', `invalid route protocol ${protocol}`);
  return ['route', op, 'blackhole', cidr, 'proto', String(protocol), 'table', 'main'].join(' ');
}

/** How a failed write is handled. */
export type WriteFailureKind = 'exists' | 'unreachable' | 'gone' | 'other';

export function classifyWriteError(error: string): WriteFailureKind {
  if (/File exists/i.test(error)) return 'exists';
  if (/No such process/i.test(error)) return 'gone';
  if (/invalid gateway|Network is unreachable|No route to host|Nexthop device is not up|Cannot find device/i.test(error)) return 'unreachable';
  return 'other';
}

// --- the real kernel -----------------------------------------------------------------------------

interface IpJsonRoute {
  type?: string;
  dst?: string;
  dev?: string;
  gateway?: string;
  protocol?: string;
  metric?: number;
  nexthops?: { gateway?: string; dev?: string }[];
}

/** rtm_protocol of routes added without `proto` (iproute2 prints no protocol for them). */
const RTPROT_BOOT = 3;

/** Route types by number (`ip -N` prints them numerically). */
const ROUTE_TYPES: Record<string, string> = {
  '1': 'unicast', '2': 'local', '3': 'broadcast', '4': 'anycast', '5': 'multicast',
  '6': 'blackhole', '7': 'unreachable', '8': 'prohibit', '9': 'throw', '10': 'nat', '11': 'xresolve',
};

function gatewayText(gw: string, dev: string | undefined, family: 4 | 6): string {
  if (family === 4) return gw;
  const a = ipaddr.IPv6.parse(gw);
  const s = a.toRFC5952String();
  return a.range() === 'linkLocal' && dev ? `${s}%${dev}` : s;
}

/** `ip -json -N route show` / `route get fibmatch` output -> FibKernelRoute. */
export function parseFibRoutes(text: string, family: 4 | 6): FibKernelRoute[] {
  const t = text.trim();
  if (t === '') return [];
  let raw: unknown;
  try {
    raw = JSON.parse(t);
  } catch (err) {
    throw new FibError('E_IP_OUTPUT', `cannot parse the JSON output of ip route: ${errorMessage(err)}`);
  }
  if (!Array.isArray(raw)) throw new FibError('E_IP_OUTPUT', 'ip route did not print a JSON array');
  const out: FibKernelRoute[] = [];
  for (const r of raw as IpJsonRoute[]) {
    if (typeof r.dst !== 'string') continue;
    const dst = r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? canonicalCidr(r.dst).cidr : canonicalCidr(`${r.dst}/${family === 4 ? 32 : 128}`).cidr;
    const type = r.type === undefined ? 'unicast' : (ROUTE_TYPES[r.type] ?? r.type);
    const gateways: string[] = [];
    if (typeof r.gateway === 'string') gateways.push(gatewayText(r.gateway, r.dev, family));
    for (const nh of r.nexthops ?? []) if (typeof nh.gateway === 'string') gateways.push(gatewayText(nh.gateway, nh.dev, family));
    gateways.sort();
    out.push({
      family,
      dst,
      // iproute2 omits the protocol of RTPROT_BOOT (3) routes, e.g. `ip route add` without `proto`.
      protocol: r.protocol === undefined ? RTPROT_BOOT : Number(r.protocol),
      metric: typeof r.metric === 'number' ? r.metric : 0,
      type,
      gateways,
      ...(typeof r.dev === 'string' ? { dev: r.dev } : {}),
    });
  }
  return out;
}

export interface LinuxFibKernelOptions {
  readonly ipPath?: string;
  /** Timeout of one read or one batch; default 120 s. */
  readonly timeoutMs?: number;
}

/** FibKernel on the real kernel of the current namespace, through iproute2. */
export class LinuxFibKernel implements FibKernel {
  readonly #ipPath: string;
  readonly #timeoutMs: number;
  readonly #batch: IpBatch;

  constructor(opts: LinuxFibKernelOptions = {}) {
    this.#ipPath = opts.ipPath ?? 'ip';
    this.#timeoutMs = opts.timeoutMs ?? 120_000;
    this.#batch = new IpBatch({ ipPath: this.#ipPath, timeoutMs: this.#timeoutMs });
  }

  async readRoutes(protocol?: number): Promise<FibKernelRoute[]> {
    const args = (fam: '-4' | '-6') => [fam, '-json', '-N', 'route', 'show', 'table', 'main', ...(protocol === undefined ? [] : ['proto', String(protocol)])];
    const [v4, v6] = await Promise.all([this.#ip(args('-4')), this.#ip(args('-6'))]);
    const routes = [...parseFibRoutes(v4.stdout, 4), ...parseFibRoutes(v6.stdout, 6)];
    // With a protocol filter iproute2 prints no protocol field: fill it in.
    return protocol === undefined ? routes : routes.map((r) => ({ ...r, protocol }));
  }

  async lookup(addrs: readonly string[]): Promise<Map<string, FibKernelRoute | undefined>> {
    const out = new Map<string, FibKernelRoute | undefined>();
    if (addrs.length === 0) return out;
    // One short-lived batch: each successful `route get` prints one JSON line in order; failed
    // ones print nothing on stdout and `Command failed -:<line>` on stderr.
    const r = await this.#ip(['-json', '-N', '-force', '-batch', '-'], addrs.map((a) => `route get fibmatch ${a}`).join('\n') + '\n', true);
    const failed = new Set<number>();
    for (const m of r.stderr.matchAll(/Command failed -:(\d+)/g)) failed.add(Number(m[1]) - 1);
    const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
    const ok = addrs.map((_, i) => i).filter((i) => !failed.has(i));
    if (lines.length !== ok.length) {
      throw new FibError('E_IP_OUTPUT', `ip route get: ${lines.length} answers for ${ok.length} lookups`);
    }
    addrs.forEach((a) => out.set(a, undefined));
    ok.forEach((i, k) => {
      const family: 4 | 6 = addrs[i].includes(':') ? 6 : 4;
      out.set(addrs[i], parseFibRoutes(lines[k], family)[0]);
    });
    return out;
  }

  async write(commands: readonly string[]): Promise<readonly { index: number; error: string }[]> {
    const r = await this.#batch.run(commands);
    if (r.failures.some((f) => /Cannot find device/.test(f.error))) await this.#batch.restart();
    return r.failures.map((f) => ({ index: f.index, error: f.error }));
  }

  async close(): Promise<void> {
    await this.#batch.close();
  }

  #ip(args: string[], input?: string, allowFailure = false): Promise<{ stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = execFile(
        this.#ipPath,
        args,
        { timeout: this.#timeoutMs, maxBuffer: 1024 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err && !(allowFailure && typeof (err as { code?: unknown }).code === 'number')) {
            reject(new FibError('E_IP', `ip ${args.join(' ')} failed: ${stderr.trim() || err.message}`, { cause: err }));
          } else resolve({ stdout, stderr });
        },
      );
      if (input !== undefined) {
        child.stdin?.on('error', () => undefined);
        child.stdin?.end(input);
      }
    });
  }
}

// --- the writer ----------------------------------------------------------------------------------

export interface FibCounters {
  /** Routes of ours in the kernel (as last read and written). */
  installed: number;
  /** Route commands that succeeded (add, replace, del), since start. */
  programmed: number;
  /** Route commands that failed for another reason than a foreign route or an unreachable next hop. */
  failures: number;
  /** Times a route was skipped because a route of another protocol holds its prefix. */
  skippedForeign: number;
  /** Prefixes currently skipped for that reason. */
  foreign: number;
  /** Routes not in the kernel because none of their next hops resolves. */
  unresolved: number;
  /** Routes with at least one unresolved next hop (retried). */
  pending: number;
  /** Stale routes (from before a restart) not yet confirmed. */
  stale: number;
  staleRemoved: number;
  /** Changes rejected by validation. */
  rejected: number;
  batches: number;
  resyncs: number;
  /** Commands written by resync (drift repaired). */
  repaired: number;
}

export interface FibApplyResult {
  readonly changes: number;
  readonly commands: number;
  readonly added: number;
  readonly replaced: number;
  readonly deleted: number;
  readonly unchanged: number;
  readonly skippedForeign: number;
  /** Routes left pending because a next hop does not resolve. */
  readonly unresolved: number;
  readonly failed: number;
  readonly rejected: readonly { readonly prefix: string; readonly error: string }[];
  /** First few failures, `<command>: <error>`. */
  readonly errors: readonly string[];
  readonly durationMs: number;
}

export interface BgpFibOptions {
  readonly kernel?: FibKernel;
  readonly protocol?: number;
  /** Retry pending (unresolved) routes this often; 0: only on retryPending(). Default 5 s. */
  readonly retryIntervalMs?: number;
  readonly log?: Logger;
}

const MAX_ERRORS = 20;

type ProgramResult = Omit<FibApplyResult, 'changes' | 'rejected' | 'durationMs'>;

export class BgpFib {
  readonly #kernel: FibKernel;
  readonly #protocol: number;
  readonly #log: Logger;
  readonly #retryIntervalMs: number;
  /** prefix -> the speaker's next hops (hopsKey of canonical addresses). */
  #wanted = new Map<string, string>();
  /** prefix -> hopsKey of our route in the kernel (default metric). */
  #installed = new Map<string, string>();
  /** Our routes with another metric than the default (never written by us): prefix -> metric. */
  #oddMetric = new Map<string, number>();
  #foreign = new Set<string>();
  /** Our blackhole routes in the kernel (default metric), and those wanted (undefined: never set). */
  #blackholes = new Set<string>();
  #wantedBlackholes: ReadonlySet<string> | undefined;
  #blackholesComplete = false;
  #warnedBlackholes = new Set<string>();
  #stale = new Set<string>();
  /** prefix -> its BGP next hops, for routes with an unresolved next hop. */
  #pending = new Map<string, string>();
  /** Routes of #pending with no resolved next hop at all (not in the kernel). */
  #unresolved = new Set<string>();
  #resolutions = new Map<string, NextHopResolution>();
  /** Next hops reported unresolvable (logged once until they resolve). */
  #loggedUnresolved = new Set<string>();
  #warnedForeign = new Set<string>();
  #started = false;
  #syncDone = false;
  #closed = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #serial: Promise<unknown> = Promise.resolve();
  readonly #counters = {
    programmed: 0, failures: 0, skippedForeign: 0, staleRemoved: 0, rejected: 0, batches: 0, resyncs: 0, repaired: 0,
  };

  constructor(opts: BgpFibOptions = {}) {
    this.#kernel = opts.kernel ?? new LinuxFibKernel();
    this.#protocol = opts.protocol ?? BGP_ROUTE_PROTO;
    this.#log = opts.log ?? logger('fib');
    this.#retryIntervalMs = opts.retryIntervalMs ?? 5_000;
  }

  /** Whether syncDone() ran (stale routes were swept). */
  get synced(): boolean {
    return this.#syncDone;
  }

  /** Reads our routes already in the kernel and keeps them, stale until apply/resync confirms them. */
  start(): Promise<{ stale: number; foreign: number }> {
    return this.#serialize(async () => {
      if (this.#started) throw new FibError('E_FIB_STARTED', 'BgpFib.start() called twice');
      await this.#readKernel();
      this.#stale = new Set([...this.#installed.keys(), ...this.#oddMetric.keys()]);
      this.#started = true;
      if (this.#retryIntervalMs > 0) {
        this.#timer = setInterval(() => {
          if (this.#pending.size > 0) void this.retryPending().catch((err) => this.#log.warn(`retrying pending routes: ${errorMessage(err)}`));
        }, this.#retryIntervalMs);
        this.#timer.unref();
      }
      if (this.#stale.size > 0) this.#log.info(`kept ${this.#stale.size} proto-${this.#protocol} routes from before the restart until BGP converges`);
      return { stale: this.#stale.size, foreign: this.#foreign.size };
    });
  }

  /** Applies a batch of Loc-RIB changes with one kernel write. Invalid changes are rejected (reported), not thrown. */
  apply(changes: readonly FibChange[]): Promise<FibApplyResult> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const started = performance.now();
      const rejected: { prefix: string; error: string }[] = [];
      const valid = new Map<string, ValidFibChange>();
      for (const c of changes) {
        try {
          const v = validateFibChange(c);
          valid.set(v.prefix, v); // the last change of a prefix in the batch wins
        } catch (err) {
          rejected.push({ prefix: String(c?.prefix), error: errorMessage(err) });
        }
      }
      this.#counters.rejected += rejected.length;
      if (rejected.length > 0) this.#log.warn(`${rejected.length} invalid FIB changes rejected, e.g. ${rejected[0].error}`);
      for (const v of valid.values()) {
        this.#stale.delete(v.prefix);
        if (v.nextHops.length === 0) this.#wanted.delete(v.prefix);
        else this.#wanted.set(v.prefix, hopsKey(v.nextHops));
      }
      await this.#resolve(new Set([...valid.values()].flatMap((v) => v.nextHops)));
      const r = await this.#program([...valid.values()].map((v) => this.#target(v.prefix, v.family, v.nextHops)));
      return { ...r, changes: changes.length, rejected, durationMs: performance.now() - started };
    });
  }

  /** Initial convergence is done: removes our routes that are still stale (not confirmed since start). */
  syncDone(): Promise<{ removed: number; failed: number }> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const view = { installed: this.#installed, foreign: this.#foreign };
      const ops = planSweep(this.#stale, view, this.#wanted);
      for (const [prefix, metric] of this.#oddMetric) {
        if (this.#stale.has(prefix)) ops.push({ op: 'del', prefix, family: prefix.includes(':') ? 6 : 4, metric });
      }
      const r = await this.#write(ops);
      this.#counters.staleRemoved += r.deleted;
      if (ops.length > 0) this.#log.info(`initial sync done: removed ${r.deleted} stale proto-${this.#protocol} routes${r.failed ? `, ${r.failed} failed` : ''}`);
      this.#stale.clear();
      this.#syncDone = true;
      return { removed: r.deleted, failed: r.failed };
    });
  }

  /**
   * Drift repair against the full set of learned routes: re-reads the kernel and next-hop routes,
   * restores missing or changed routes, deletes our routes not wanted (stale ones only after
   * syncDone). `all` replaces what apply() accumulated.
   */
  resync(all: readonly FibChange[]): Promise<FibApplyResult> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const started = performance.now();
      this.#counters.resyncs++;
      const rejected: { prefix: string; error: string }[] = [];
      const wanted = new Map<string, ValidFibChange>();
      for (const c of all) {
        try {
          const v = validateFibChange(c);
          if (v.nextHops.length > 0) wanted.set(v.prefix, v);
        } catch (err) {
          rejected.push({ prefix: String(c?.prefix), error: errorMessage(err) });
        }
      }
      this.#counters.rejected += rejected.length;
      await this.#readKernel();
      this.#wanted = new Map([...wanted.values()].map((v) => [v.prefix, hopsKey(v.nextHops)]));
      for (const p of wanted.keys()) this.#stale.delete(p);
      this.#pending.clear();
      this.#unresolved.clear();
      this.#resolutions.clear();
      await this.#resolve(new Set([...wanted.values()].flatMap((v) => v.nextHops)));
      const targets = new Map<string, FibTarget>();
      for (const v of wanted.values()) targets.set(v.prefix, this.#target(v.prefix, v.family, v.nextHops));
      // Before syncDone, stale routes stay (graceful restart); afterwards every unwanted one goes.
      const keep = this.#syncDone ? new Set<string>() : this.#stale;
      const oddDeletes: FibOp[] = [];
      for (const [prefix, metric] of this.#oddMetric) {
        if (!keep.has(prefix)) oddDeletes.push({ op: 'del', prefix, family: prefix.includes(':') ? 6 : 4, metric });
      }
      const r = await this.#programPlan(planResync(targets, { installed: this.#installed, foreign: this.#foreign }, keep), oddDeletes);
      await this.#programBlackholes();
      this.#counters.repaired += r.commands;
      if (r.commands > 0) this.#log.info(`resync repaired drift: ${r.added} added, ${r.replaced} replaced, ${r.deleted} deleted${r.failed ? `, ${r.failed} failed` : ''}`);
      return { ...r, changes: all.length, rejected, durationMs: performance.now() - started };
    });
  }

  /** Re-resolves the next hops of pending routes and programs those that now resolve. */
  retryPending(): Promise<FibApplyResult> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const started = performance.now();
      const pending = [...this.#pending];
      const nextHops = new Set<string>();
      for (const [, key] of pending) for (const nh of key.split(',')) nextHops.add(nh);
      for (const nh of nextHops) this.#resolutions.delete(nh);
      await this.#resolve(nextHops);
      const r = await this.#program(pending.map(([prefix, key]) => this.#target(prefix, prefix.includes(':') ? 6 : 4, key.split(','))));
      return { ...r, changes: 0, rejected: [], durationMs: performance.now() - started };
    });
  }

  /**
   * The routes to the next hops may have changed (the caller saw a non-BGP route or link change):
   * resolves every next hop again and reprograms only the routes whose kernel next hops differ
   * now. Pending routes are retried as part of it.
   */
  refreshNextHops(): Promise<FibApplyResult> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const started = performance.now();
      const before = this.#resolutions;
      this.#resolutions = new Map();
      const nextHops = new Set<string>();
      for (const key of this.#wanted.values()) for (const nh of key.split(',')) nextHops.add(nh);
      await this.#resolve(nextHops);
      const changed = new Set<string>();
      for (const nh of nextHops) {
        const a = before.get(nh);
        const b = this.#resolutions.get(nh);
        if (a === undefined || b === undefined || resolutionKey(a) !== resolutionKey(b)) changed.add(nh);
      }
      const targets: FibTarget[] = [];
      if (changed.size > 0) {
        for (const [prefix, key] of this.#wanted) {
          const nhs = key.split(',');
          if (nhs.some((nh) => changed.has(nh))) targets.push(this.#target(prefix, prefix.includes(':') ? 6 : 4, nhs));
        }
      }
      const r = await this.#program(targets);
      return { ...r, changes: 0, rejected: [], durationMs: performance.now() - started };
    });
  }

  /**
   * Blackhole routes of ours for exactly these prefixes (block aggregation): missing ones added;
   * when `complete`, ours not listed deleted. A prefix held by a route of another protocol is
   * skipped (logged once). Invalid prefixes are rejected (logged), not thrown.
   */
  setBlackholes(prefixes: readonly string[], complete: boolean): Promise<{ added: number; deleted: number; failed: number }> {
    return this.#serialize(async () => {
      this.#checkRunning();
      const wanted = new Set<string>();
      for (const p of prefixes) {
        try {
          wanted.add(canonicalCidr(p).cidr);
        } catch (err) {
          this.#log.warn(`blackhole for '${p}' rejected: ${errorMessage(err)}`);
        }
      }
      this.#wantedBlackholes = wanted;
      this.#blackholesComplete = complete;
      return this.#programBlackholes();
    });
  }

  /** Our blackhole routes in the kernel as last read and written (sorted). */
  blackholes(): string[] {
    return [...this.#blackholes].sort();
  }

  /** Canonical prefixes of the main-table routes (v4 and v6) that carry any of these protocols. */
  async exportedKernelRoutes(protocols: readonly number[]): Promise<string[]> {
    const out = new Set<string>();
    for (const p of new Set(protocols)) {
      if (!Number.isInteger(p) || p < 0 || p > 255) throw new FibError('E_FIB_BAD_PROTO', `invalid route protocol ${p}`);
      for (const r of await this.#kernel.readRoutes(p)) if (r.type === 'unicast') out.add(r.dst);
    }
    return [...out].sort();
  }

  counters(): FibCounters {
    return {
      ...this.#counters,
      installed: this.#installed.size,
      foreign: this.#foreign.size,
      unresolved: this.#unresolved.size,
      pending: this.#pending.size,
      stale: this.#stale.size,
    };
  }

  /** Stops retrying and ends the `ip` process. Routes stay in the kernel (graceful restart). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#serial.catch(() => undefined);
    await this.#kernel.close();
  }

  // --- internals ---------------------------------------------------------------------------------

  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#serial.then(fn);
    this.#serial = next.catch(() => undefined);
    return next;
  }

  #checkRunning(): void {
    if (this.#closed) throw new FibError('E_FIB_CLOSED', 'BgpFib is closed');
    if (!this.#started) throw new FibError('E_FIB_NOT_STARTED', 'BgpFib.start() must run first');
  }

  async #readKernel(): Promise<void> {
    const installed = new Map<string, string>();
    const odd = new Map<string, number>();
    const foreign = new Set<string>();
    const blackholes = new Set<string>();
    for (const r of await this.#kernel.readRoutes()) {
      if (r.protocol !== this.#protocol) foreign.add(r.dst);
      else if (r.type === 'blackhole' && r.metric === defaultMetric(r.family)) blackholes.add(r.dst);
      else if (r.type !== 'unicast') odd.set(r.dst, r.metric);
      else if (r.metric === defaultMetric(r.family) && !installed.has(r.dst)) installed.set(r.dst, hopsKey(r.gateways));
      else odd.set(r.dst, r.metric);
    }
    this.#installed = installed;
    this.#oddMetric = odd;
    this.#foreign = foreign;
    this.#blackholes = blackholes;
  }

  /** Adds the wanted blackholes that are missing; deletes ours not wanted once the list was complete. */
  async #programBlackholes(): Promise<{ added: number; deleted: number; failed: number }> {
    const res = { added: 0, deleted: 0, failed: 0 };
    const wanted = this.#wantedBlackholes;
    if (wanted === undefined) return res;
    const ops: Array<{ op: 'add' | 'del'; prefix: string }> = [];
    for (const p of wanted) {
      if (this.#blackholes.has(p)) continue;
      if (this.#foreign.has(p) || this.#installed.has(p)) {
        if (!this.#warnedBlackholes.has(p)) {
          this.#warnedBlackholes.add(p);
          this.#log.warn(`blackhole for block ${p} skipped: another route holds the prefix`);
        }
        continue;
      }
      ops.push({ op: 'add', prefix: p });
    }
    if (this.#blackholesComplete) for (const p of this.#blackholes) if (!wanted.has(p)) ops.push({ op: 'del', prefix: p });
    if (ops.length === 0) return res;
    const failures = new Map<number, string>();
    for (const f of await this.#kernel.write(ops.map((o) => blackholeCommand(o.op, o.prefix, this.#protocol)))) failures.set(f.index, f.error);
    this.#counters.batches++;
    ops.forEach((o, i) => {
      const error = failures.get(i);
      if (error === undefined) {
        this.#counters.programmed++;
        if (o.op === 'add') {
          this.#blackholes.add(o.prefix);
          res.added++;
        } else {
          this.#blackholes.delete(o.prefix);
          res.deleted++;
        }
        return;
      }
      const kind = classifyWriteError(error);
      if (o.op === 'del' && kind === 'gone') {
        this.#blackholes.delete(o.prefix);
        return;
      }
      if (o.op === 'add' && kind === 'exists') {
        if (!this.#warnedBlackholes.has(o.prefix)) {
          this.#warnedBlackholes.add(o.prefix);
          this.#log.warn(`blackhole for block ${o.prefix} skipped: a route with the same key exists in the kernel`);
        }
        return;
      }
      res.failed++;
      this.#counters.failures++;
      this.#log.warn(`${o.op} blackhole ${o.prefix} failed: ${error}`);
    });
    if (res.added + res.deleted > 0) this.#log.info(`block blackholes: ${res.added} added, ${res.deleted} deleted`);
    return res;
  }

  /** Looks up next hops not yet resolved (one kernel round trip for all of them). */
  async #resolve(nextHops: Iterable<string>): Promise<void> {
    const todo: string[] = [];
    for (const nh of nextHops) {
      if (this.#resolutions.has(nh)) continue;
      if (nh.includes('%')) this.#resolutions.set(nh, resolveNextHop(nh, undefined, this.#protocol));
      else todo.push(nh);
    }
    if (todo.length === 0) return;
    const routes = await this.#kernel.lookup(todo);
    for (const nh of todo) {
      const res = resolveNextHop(nh, routes.get(nh), this.#protocol);
      this.#resolutions.set(nh, res);
      if (!res.ok && !this.#loggedUnresolved.has(nh)) {
        this.#loggedUnresolved.add(nh);
        this.#log.warn(`next hop ${nh} does not resolve (${res.reason}); its routes wait and are retried`);
      } else if (res.ok && this.#loggedUnresolved.delete(nh)) {
        this.#log.info(`next hop ${nh} resolves now, via ${res.hops.join(', ')}`);
      }
    }
  }

  /** The target of a route with these BGP next hops; records it as pending when a next hop does not resolve. */
  #target(prefix: string, family: 4 | 6, nextHops: readonly string[]): FibTarget {
    if (nextHops.length === 0) {
      this.#pending.delete(prefix);
      this.#unresolved.delete(prefix);
      return { prefix, family, hops: [] };
    }
    const { hops, unresolved } = kernelHops(nextHops, this.#resolutions);
    if (unresolved.length > 0) this.#pending.set(prefix, hopsKey(nextHops));
    else this.#pending.delete(prefix);
    if (hops.length === 0) this.#unresolved.add(prefix);
    else this.#unresolved.delete(prefix);
    return { prefix, family, hops };
  }

  #program(targets: readonly FibTarget[]): Promise<ProgramResult> {
    return this.#programPlan(planRoutes(targets, { installed: this.#installed, foreign: this.#foreign }));
  }

  async #programPlan(plan: FibPlan, extraOps: readonly FibOp[] = []): Promise<ProgramResult> {
    const fresh = plan.foreign.filter((p) => !this.#warnedForeign.has(p));
    this.#counters.skippedForeign += plan.foreign.length;
    if (fresh.length > 0) {
      for (const p of fresh) this.#warnedForeign.add(p);
      this.#log.warn(`${fresh.length} BGP routes skipped: a route of another protocol holds the prefix (${fresh.slice(0, 5).join(', ')}${fresh.length > 5 ? ', ...' : ''})`);
    }
    const r = await this.#write([...extraOps, ...plan.ops]);
    return {
      ...r,
      unchanged: plan.unchanged,
      skippedForeign: plan.foreign.length + r.skippedForeign,
      unresolved: this.#unresolved.size,
    };
  }

  /** Writes ops as one batch and updates the view from what succeeded. */
  async #write(ops: readonly FibOp[]): Promise<{ commands: number; added: number; replaced: number; deleted: number; failed: number; skippedForeign: number; errors: string[] }> {
    const res = { commands: 0, added: 0, replaced: 0, deleted: 0, failed: 0, skippedForeign: 0, errors: [] as string[] };
    if (ops.length === 0) return res;
    // An op whose text cannot be built (e.g. a resolved gateway of the wrong family) fails alone.
    const commands: string[] = [];
    const written: number[] = [];
    const failures = new Map<number, string>();
    ops.forEach((op, i) => {
      try {
        commands.push(fibOpCommand(op, this.#protocol));
        written.push(i);
      } catch (err) {
        failures.set(i, errorMessage(err));
      }
    });
    this.#counters.batches++;
    res.commands = commands.length;
    for (const f of await this.#kernel.write(commands)) failures.set(written[f.index], f.error);
    ops.forEach((op, i) => {
      const error = failures.get(i);
      if (error === undefined) {
        this.#counters.programmed++;
        if (op.op === 'del') {
          if (op.metric !== undefined) this.#oddMetric.delete(op.prefix);
          else this.#installed.delete(op.prefix);
          res.deleted++;
        } else {
          this.#installed.set(op.prefix, hopsKey(op.hops));
          this.#foreign.delete(op.prefix);
          this.#warnedForeign.delete(op.prefix);
          if (op.op === 'add') res.added++;
          else res.replaced++;
        }
        return;
      }
      const kind = classifyWriteError(error);
      if (op.op === 'del' && kind === 'gone') {
        // Not (or no longer) ours in the kernel: nothing to delete.
        if (op.metric !== undefined) this.#oddMetric.delete(op.prefix);
        else this.#installed.delete(op.prefix);
        return;
      }
      if (op.op === 'add' && kind === 'exists') {
        // A route with the same key appeared that we did not know of: not ours, leave it alone.
        this.#foreign.add(op.prefix);
        res.skippedForeign++;
        this.#counters.skippedForeign++;
        if (!this.#warnedForeign.has(op.prefix)) {
          this.#warnedForeign.add(op.prefix);
          this.#log.warn(`BGP route ${op.prefix} skipped: a route with the same key exists in the kernel`);
        }
        return;
      }
      if (op.op !== 'del' && kind === 'unreachable') {
        // The kernel disagrees that the next hops are reachable: look them up again on retry.
        const nhs = this.#wanted.get(op.prefix);
        if (nhs !== undefined) {
          this.#pending.set(op.prefix, nhs);
          if (!this.#installed.has(op.prefix)) this.#unresolved.add(op.prefix);
          for (const nh of nhs.split(',')) this.#resolutions.delete(nh);
        }
        return;
      }
      res.failed++;
      this.#counters.failures++;
      if (res.errors.length < MAX_ERRORS) res.errors.push(`${op.op} ${op.prefix}: ${error}`);
    });
    if (res.failed > 0) this.#log.warn(`${res.failed} of ${ops.length} FIB commands failed, e.g. ${res.errors[0]}`);
    return res;
  }
}
