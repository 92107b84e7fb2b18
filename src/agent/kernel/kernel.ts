/**
 * The one narrow interface between routecat's host agent and the Linux kernel of the current network
 * namespace, for workload interfaces and their routes: list links, list the routes of one protocol,
 * apply a batch of route changes, read and write sysctls. Two implementations: LinuxKernel (the
 * `ip` command and /proc/sys) and FakeKernel (stateful, in memory, for unit tests).
 *
 * This module owns the data types and the route-command text; it does no I/O itself. Nothing that
 * uses this interface may ever touch a route that does not carry the protocol number it asked for.
 */
import ipaddr from 'ipaddr.js';
import { RoutecatError } from '../../errors.ts';

/**
 * routecat's route protocol number (rtm_protocol): every route the agent programs carries it, and
 * only routes carrying it are ever replaced or removed. 192 is unassigned by the kernel (iproute2's
 * rt_protos file happens to call it "eigrp"; we always use the number).
 */
export const ROUTE_PROTO = 192;

/** The main routing table (RT_TABLE_MAIN). */
export const MAIN_TABLE = 254;

/** Default metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6. */
export function defaultMetric(family: 4 | 6): number {
  return family === 4 ? 0 : 1024;
}

export interface LinkInfo {
  readonly name: string;
  readonly index: number;
  /** IFF_UP: administratively up. */
  readonly adminUp: boolean;
  /** RFC 2863 operational state as the kernel reports it: UP, DOWN, LOWERLAYERDOWN, UNKNOWN, ... */
  readonly operState: string;
  readonly mac?: string;
}

/** Usable for routing: administratively up and operationally UP (or UNKNOWN, e.g. tun/tap, lo). */
export function linkIsUp(link: LinkInfo): boolean {
  return link.adminUp && (link.operState === 'UP' || link.operState === 'UNKNOWN');
}

/** A route as read from the kernel (main table, unicast). `dst` is a canonical CIDR. */
export interface KernelRoute {
  readonly family: 4 | 6;
  readonly dst: string;
  readonly dev: string;
  readonly protocol: number;
  /** IPv4 scope name (`link`, `global`, `host`); IPv6 routes have none. */
  readonly scope?: string;
  readonly metric: number;
  readonly table: number;
  readonly gateway?: string;
}

/** A route the agent wants: always `dev <iface> proto <protocol> scope link` in the main table. */
export interface RouteSpec {
  readonly family: 4 | 6;
  readonly dst: string;
  readonly dev: string;
  readonly protocol: number;
  /** Set only to delete a route of ours that has a non-default metric. */
  readonly metric?: number;
}

/**
 * `add` fails when any route with the same key exists (so a foreign route is never overwritten);
 * `replace` is used only where the existing route with that key is known to be ours; `del` always
 * names the protocol, so the kernel itself refuses to delete a route that is not ours.
 */
export type RouteOp =
  | { readonly op: 'add'; readonly route: RouteSpec }
  | { readonly op: 'replace'; readonly route: RouteSpec }
  | { readonly op: 'del'; readonly route: RouteSpec };

export interface RouteOpFailure {
  /** Index into the ops array given to applyRoutes. */
  readonly index: number;
  readonly op: RouteOp;
  readonly error: string;
}

export interface RouteBatchResult {
  /** Commands written (== ops.length). */
  readonly commands: number;
  readonly failures: readonly RouteOpFailure[];
  readonly durationMs: number;
}

/** Monotonic counters of the work a Kernel did, for stats and tests ("N routes cost one process"). */
export interface KernelCounters {
  processesSpawned: number;
  batches: number;
  commands: number;
  commandFailures: number;
  linkReads: number;
  routeReads: number;
  sysctlReads: number;
  sysctlWrites: number;
}

export function zeroCounters(): KernelCounters {
  return {
    processesSpawned: 0,
    batches: 0,
    commands: 0,
    commandFailures: 0,
    linkReads: 0,
    routeReads: 0,
    sysctlReads: 0,
    sysctlWrites: 0,
  };
}

export function counterDelta(after: KernelCounters, before: KernelCounters): KernelCounters {
  const out = zeroCounters();
  for (const k of Object.keys(out) as (keyof KernelCounters)[]) out[k] = after[k] - before[k];
  return out;
}

export interface Kernel {
  /** All links of the current namespace. */
  listLinks(): Promise<LinkInfo[]>;
  /** Unicast routes of the main table (IPv4 and IPv6) that carry `protocol`. */
  listRoutes(protocol: number): Promise<KernelRoute[]>;
  /** Applies the ops in order as one batch; per-op failures are reported, not thrown. */
  applyRoutes(ops: readonly RouteOp[]): Promise<RouteBatchResult>;
  /**
   * Reads a sysctl by its path under /proc/sys with '/' separators
   * (`net/ipv4/conf/cali1/proxy_arp`); undefined when it does not exist. Synchronous: /proc/sys is
   * memory, and one apply may read tens of thousands of values.
   */
  readSysctl(path: string): string | undefined;
  /** Writes a sysctl; throws KernelError E_SYSCTL when it does not exist or cannot be written. */
  writeSysctl(path: string, value: string): void;
  counters(): KernelCounters;
  close(): Promise<void>;
}

export class KernelError extends RoutecatError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'KernelError';
  }
}

/** Canonical CIDR text: network address (host bits cleared), IPv6 in RFC 5952 form, explicit length. */
export function canonicalCidr(text: string): { family: 4 | 6; cidr: string } {
  const s = text.trim();
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  if (ipaddr.IPv4.isValidFourPartDecimal(addrText)) addr = ipaddr.IPv4.parse(addrText);
  else if (addrText.includes(':') && !addrText.includes('%') && ipaddr.IPv6.isValid(addrText)) addr = ipaddr.IPv6.parse(addrText);
  else throw new KernelError('E_BAD_CIDR', `invalid CIDR '${text}': not an IPv4 or IPv6 address`);
  const family: 4 | 6 = addr.kind() === 'ipv4' ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const lenText = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) {
      throw new KernelError('E_BAD_CIDR', `invalid CIDR '${text}': prefix length must be 0..${max}`);
    }
    len = Number(lenText);
  }
  const bytes = addr.toByteArray();
  for (let bit = len; bit < max; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  const net = ipaddr.fromByteArray(bytes);
  const text2 = family === 6 ? (net as ipaddr.IPv6).toRFC5952String() : net.toString();
  return { family, cidr: `${text2}/${len}` };
}

/** Interface names as the kernel allows them: 1..15 bytes, no '/', ':', whitespace or quotes. */
export function isValidIfaceName(name: string): boolean {
  return /^[A-Za-z0-9_.@+-]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/**
 * The `ip` batch-line text of one op (no leading `ip`, no `-6`: the family follows from the
 * prefix). Everything is validated: the text is whitespace-separated words with no quotes,
 * backslashes or '#', which `ip -batch` would otherwise interpret.
 */
export function routeOpCommand(op: RouteOp): string {
  const r = op.route;
  const { cidr } = canonicalCidr(r.dst);
  if (!isValidIfaceName(r.dev)) throw new KernelError('E_BAD_IFACE', `invalid interface name '${r.dev}'`);
  if (!Number.isInteger(r.protocol) || r.protocol < 1 || r.protocol > 255) {
    throw new KernelError('E_BAD_PROTO', `invalid route protocol ${r.protocol}`);
  }
  const words = ['route', op.op, cidr, 'dev', r.dev, 'proto', String(r.protocol)];
  if (r.family === 4 && op.op !== 'del') words.push('scope', 'link');
  if (r.metric !== undefined) words.push('metric', String(r.metric));
  words.push('table', 'main');
  return words.join(' ');
}

/** Key the kernel uses to identify a route within one table: family, destination, metric. */
export function routeKey(r: { family: 4 | 6; dst: string; metric?: number }): string {
  return `${r.dst}|${r.metric ?? defaultMetric(r.family)}`;
}
