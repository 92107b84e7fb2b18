/**
 * The ACL dataplane: what both packet-filter backends (iptables + ipset, nftables) share.
 *
 * It owns
 *  - the AclDataplane interface and the factory that picks a backend;
 *  - the backend-neutral rule model (AclChain / AclRule / AclMatch / AclAction / AclSet);
 *  - compileAclModel(): DataplaneModel -> that rule model, i.e. Calico's semantics (bookended
 *    policy, interface dispatch that fails closed, conntrack fast path, anti-spoofing, tiers with
 *    pass, profiles, host endpoints with failsafe ports, natOutgoing);
 *  - small shared pieces: chain/set naming, rule-text hashing, CIDR and interval arithmetic, and
 *    the chain-level diff of desired against read-back state.
 *
 * It never runs a command and never knows any backend's syntax: the backends render the rule
 * model to text, hash each rendered rule, and write only what differs from what they read back.
 *
 * Chain layout (iptables names; the nftables backend uses the same names inside `inet routecat`):
 *
 *   FORWARD  -> rc-FORWARD          conntrack for prefix+ interfaces, then
 *                 -i cali+ -> rc-from-wl-dispatch -> (-i caliX -g rc-fw-caliX | DROP)
 *                 -o cali+ -> rc-to-wl-dispatch   -> (-o caliX -g rc-tw-caliX | DROP)
 *                 -i/-o cali+ ACCEPT  (both ends' policy returned = allowed)
 *   INPUT    -> rc-INPUT            -i cali+: conntrack, rc-wl-to-host (egress policy, then the
 *                                   endpointToHostAction); host endpoints: rc-from-hep-dispatch
 *   OUTPUT   -> rc-OUTPUT           -o cali+: RETURN (host to local workload is not policed);
 *                                   host endpoints: rc-to-hep-dispatch
 *   nat POSTROUTING -> rc-nat-POSTROUTING   natOutgoing MASQUERADE
 *
 *   rc-fw-X, rc-tw-X (from/to workload) and rc-fh-X, rc-th-X (from/to host endpoint) evaluate tiers and
 *   profiles by jumping to the shared policy chains rc-pi-H, rc-po-H (policy ingress/egress) and
 *   rc-pri-H, rc-pro-H (profile ingress/egress). Policy chains report with two mark bits:
 *   MARK_ACCEPT ("allowed, stop") and MARK_PASS ("skip the rest of this tier").
 */
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { RoutecatError } from '../../errors.ts';
import type {
  CompiledPolicy,
  CompiledRule,
  DataplaneModel,
  Direction,
  EndpointPolicies,
  LocalEndpoint,
  PortRange,
  ProtocolMatch,
  RuleMatch,
} from '../model.ts';
import { createExecRunner, type CommandRunner } from './exec.ts';
import { IptablesDataplane } from './iptables.ts';
import { NftablesDataplane } from './nftables.ts';

export type { CommandRunner, CommandResult } from './exec.ts';

// ---------------------------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------------------------

export type AclKind = 'iptables' | 'nftables';
export type EndpointToHostAction = 'Drop' | 'Accept' | 'Return';

export interface AclApplyStats {
  /** True when anything was written to the kernel. */
  readonly changed: boolean;
  /** Rules written (rules of every chain that was created or rewritten, plus top-level jumps). */
  readonly rulesWritten: number;
  /** Rules the desired state has in total. */
  readonly rulesTotal: number;
  /** Sets created, updated or deleted. */
  readonly setsWritten: number;
  readonly durationMs: number;
}

export interface AclApplyOptions {
  /** False while the datastore is not in sync: nothing of ours is deleted, only added/updated. */
  readonly inSync: boolean;
}

export interface AclDataplane {
  readonly name: AclKind;
  /** Make the kernel match the model with the smallest change; one transaction per table. */
  apply(model: DataplaneModel, opts: AclApplyOptions): Promise<AclApplyStats>;
  /** Re-read the kernel state (the next apply diffs against it). apply() does this itself first. */
  readBack(): Promise<void>;
  /** Remove everything this dataplane owns (our chains, jump rules, sets, table). */
  cleanup(): Promise<void>;
}

export interface AclDataplaneOptions {
  /** Workload interface prefix; default 'cali'. */
  readonly ifacePrefix?: string;
  /** What happens to workload -> host traffic after egress policy; default 'Drop'. */
  readonly endpointToHostAction?: EndpointToHostAction;
  /** Program IPv6 too (ip6tables / ip6 rules); default true. */
  readonly ipv6?: boolean;
  readonly runner?: CommandRunner;
}

/** Options after defaults; what the backends receive. */
export interface AclSettings {
  readonly ifacePrefix: string;
  readonly endpointToHostAction: EndpointToHostAction;
  readonly ipv6: boolean;
  readonly runner: CommandRunner;
}

export function resolveAclSettings(opts: AclDataplaneOptions = {}): AclSettings {
  const ifacePrefix = opts.ifacePrefix ?? 'cali';
  if (!/^[A-Za-z0-9_.-]{1,14}$/.test(ifacePrefix)) {
    throw new AclError('E_ACL_CONFIG', `invalid interface prefix '${ifacePrefix}': 1-14 of [A-Za-z0-9_.-]`);
  }
  const endpointToHostAction = opts.endpointToHostAction ?? 'Drop';
  if (!['Drop', 'Accept', 'Return'].includes(endpointToHostAction)) {
    throw new AclError('E_ACL_CONFIG', `invalid endpointToHostAction '${String(endpointToHostAction)}'`);
  }
  return { ifacePrefix, endpointToHostAction, ipv6: opts.ipv6 ?? true, runner: opts.runner ?? createExecRunner() };
}

export function createAclDataplane(kind: AclKind, opts: AclDataplaneOptions = {}): AclDataplane {
  const settings = resolveAclSettings(opts);
  switch (kind) {
    case 'iptables':
      return new IptablesDataplane(settings);
    case 'nftables':
      return new NftablesDataplane(settings);
    default:
      throw new AclError('E_ACL_CONFIG', `unknown ACL dataplane '${String(kind)}': expected iptables or nftables`);
  }
}

/** Errors of the ACL dataplane: E_ACL_MODEL (unusable model value), E_ACL_APPLY, E_ACL_READBACK, E_ACL_CONFIG. */
export class AclError extends RoutecatError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'AclError';
  }
}

// ---------------------------------------------------------------------------------------------
// Rule model shared by the backends
// ---------------------------------------------------------------------------------------------

/** Mark bits the endpoint and policy chains use to talk to each other. */
export const MARK_ACCEPT = 0x10000;
export const MARK_PASS = 0x20000;
export const MARK_ALL = MARK_ACCEPT | MARK_PASS;

export type Family = 4 | 6;
export type AclTable = 'filter' | 'nat';
export type AclHook = 'forward' | 'input' | 'output' | 'postrouting';
export type CtState = 'established' | 'related' | 'invalid' | 'new';

/** Protocol after normalisation: a known lower-case name or an IANA number with no common name. */
export type L4Proto = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'sctp' | 'udplite' | number;

export interface AddrMatch {
  readonly dir: 'src' | 'dst';
  readonly negate: boolean;
  /** Canonical CIDRs of the rule's family (one: inline; more: an ipset / anonymous set). */
  readonly nets?: readonly string[];
  /** Name of an AclSet (kernel-safe, the same in both backends). */
  readonly set?: string;
}

export interface PortMatch {
  readonly dir: 'src' | 'dst';
  readonly negate: boolean;
  readonly ranges: readonly PortRange[];
}

export interface IcmpMatch {
  readonly type: number;
  readonly code?: number;
}

/** Everything present must match. A rule with addrs or icmp always has a family. */
export interface AclMatch {
  readonly family?: Family;
  /** Exact interface name, or a prefix ending in '+'. */
  readonly iif?: string;
  readonly oif?: string;
  readonly ctState?: readonly CtState[];
  /** All of these mark bits set. */
  readonly markAll?: number;
  /** None of these mark bits set. */
  readonly markNone?: number;
  readonly protocol?: L4Proto;
  readonly notProtocol?: L4Proto;
  readonly addrs?: readonly AddrMatch[];
  readonly ports?: readonly PortMatch[];
  readonly icmp?: IcmpMatch;
  readonly notIcmp?: IcmpMatch;
}

export type AclAction =
  | { readonly kind: 'accept' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'return' }
  | { readonly kind: 'jump'; readonly chain: string }
  | { readonly kind: 'goto'; readonly chain: string }
  | { readonly kind: 'setMark'; readonly bits: number }
  | { readonly kind: 'clearMark'; readonly bits: number }
  | { readonly kind: 'log'; readonly prefix: string }
  | { readonly kind: 'masquerade' }
  /** Interface dispatch: goto the chain of the matching interface (nft: a verdict map). */
  | { readonly kind: 'dispatch'; readonly key: 'iif' | 'oif'; readonly targets: readonly DispatchTarget[] };

export interface DispatchTarget {
  readonly iface: string;
  readonly chain: string;
}

export interface AclRule {
  readonly match: AclMatch;
  readonly action: AclAction;
}

export interface AclChain {
  readonly name: string;
  readonly table: AclTable;
  /** Set for the entry chains, hooked from the kernel's built-in chain / a base chain. */
  readonly hook?: AclHook;
  readonly rules: readonly AclRule[];
}

export interface AclSet {
  /** `rc4-<hash>` / `rc6-<hash>`. */
  readonly name: string;
  readonly family: Family;
  /** Canonical CIDRs, sorted, de-duplicated. */
  readonly members: readonly string[];
}

export interface AclRuleset {
  /** Chains in a stable order: entry chains first, then by name. */
  readonly chains: readonly AclChain[];
  readonly sets: readonly AclSet[];
  /** Things of the model that were skipped, with why (e.g. a host endpoint with iface '*'). */
  readonly skipped: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Naming and hashing
// ---------------------------------------------------------------------------------------------

/** 16 hex characters of SHA-256: names and rule hashes. */
export function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Hash of one rendered rule; carried in the rule's comment so unchanged rules are never rewritten. */
export function ruleHash(chain: string, renderedRule: string): string {
  return shortHash(`${chain}\u0000${renderedRule}`);
}

export const CHAIN_PREFIX = 'rc-';
export const SET_PREFIX = 'rc';
/** iptables' limit (XT_EXTENSION_MAXNAMELEN - 1 minus room, as Calico keeps it). */
export const MAX_CHAIN_NAME = 28;
/** ipset's limit (IPSET_MAXNAMELEN - 1). */
export const MAX_SET_NAME = 31;

export const CHAIN = {
  forward: 'rc-FORWARD',
  input: 'rc-INPUT',
  output: 'rc-OUTPUT',
  natPostrouting: 'rc-nat-POSTROUTING',
  fromWlDispatch: 'rc-from-wl-dispatch',
  toWlDispatch: 'rc-to-wl-dispatch',
  wlToHost: 'rc-wl-to-host',
  fromHepDispatch: 'rc-from-hep-dispatch',
  toHepDispatch: 'rc-to-hep-dispatch',
  failsafeIn: 'rc-failsafe-in',
  failsafeOut: 'rc-failsafe-out',
} as const;

export function policyChainName(policy: Pick<CompiledPolicy, 'id' | 'kind'>, dir: Direction): string {
  const kind = policy.kind === 'Profile' ? (dir === 'ingress' ? 'pri' : 'pro') : dir === 'ingress' ? 'pi' : 'po';
  return `${CHAIN_PREFIX}${kind}-${shortHash(policy.id)}`;
}

/** `fw` from workload, `tw` to workload, `fh` from host endpoint, `th` to host endpoint. */
export function endpointChainName(kind: 'fw' | 'tw' | 'fh' | 'th', ep: Pick<LocalEndpoint, 'id' | 'iface'>): string {
  const readable = /^[A-Za-z0-9_-]{1,15}$/.test(ep.iface) ? ep.iface : `h${shortHash(ep.id)}`;
  return `${CHAIN_PREFIX}${kind}-${readable}`;
}

/** Kernel name of a model IP set's family half. */
export function ipSetName(family: Family, id: string): string {
  return `${SET_PREFIX}${family}-${shortHash(`ipset:${id}`)}`;
}

/** Kernel name of a set holding an inline list of networks (iptables: >1 net in one match). */
export function netListSetName(family: Family, nets: readonly string[]): string {
  return `${SET_PREFIX}${family}-${shortHash(`nets:${nets.join(',')}`)}`;
}

// ---------------------------------------------------------------------------------------------
// CIDR helpers
// ---------------------------------------------------------------------------------------------

export interface ParsedNet {
  readonly family: Family;
  /** Network address with host bits cleared. */
  readonly base: bigint;
  readonly len: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

function bytesToBigint(bytes: number[]): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

function bigintToAddr(family: Family, v: bigint): string {
  const n = family === 4 ? 4 : 16;
  const bytes: number[] = new Array(n);
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  const addr = ipaddr.fromByteArray(bytes);
  return addr.kind() === 'ipv6' ? (addr as ipaddr.IPv6).toRFC5952String() : addr.toString();
}

/** Parse `a.b.c.d/len`, `x::y/len` or a bare address (host route). Throws AclError when invalid. */
export function parseNet(text: string): ParsedNet {
  const s = text.trim();
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    if (!ipaddr.isValid(addrText) || addrText.includes('%')) throw new Error('bad address');
    addr = ipaddr.parse(addrText);
  } catch {
    throw new AclError('E_ACL_MODEL', `invalid network '${text}'`);
  }
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && !addrText.includes(':')) {
    addr = (addr as ipaddr.IPv6).toIPv4Address();
  }
  const family: Family = addr.kind() === 'ipv4' ? 4 : 6;
  const max = BITS[family];
  const len = slash < 0 ? max : Number(s.slice(slash + 1));
  if (!Number.isInteger(len) || len < 0 || len > max || (slash >= 0 && !/^\d{1,3}$/.test(s.slice(slash + 1)))) {
    throw new AclError('E_ACL_MODEL', `invalid network '${text}': prefix length must be 0-${max}`);
  }
  const hostBits = BigInt(max - len);
  const base = (bytesToBigint(addr.toByteArray()) >> hostBits) << hostBits;
  return { family, base, len };
}

export function formatNet(n: ParsedNet): string {
  return `${bigintToAddr(n.family, n.base)}/${n.len}`;
}

/** Canonical, de-duplicated, sorted (by address, then length) nets of one family. */
export function canonicalNets(nets: readonly string[], family: Family): string[] {
  const parsed = new Map<string, ParsedNet>();
  for (const n of nets) {
    const p = parseNet(n);
    if (p.family === family) parsed.set(formatNet(p), p);
  }
  return [...parsed.entries()]
    .sort(([, a], [, b]) => (a.base < b.base ? -1 : a.base > b.base ? 1 : a.len - b.len))
    .map(([k]) => k);
}

/** An inclusive address interval. */
export interface AddrRange {
  readonly lo: bigint;
  readonly hi: bigint;
}

export function netToRange(n: ParsedNet): AddrRange {
  const host = (1n << BigInt(BITS[n.family] - n.len)) - 1n;
  return { lo: n.base, hi: n.base | host };
}

/** Sort and merge overlapping or adjacent intervals (what nft's auto-merge does). */
export function mergeRanges(ranges: readonly AddrRange[]): AddrRange[] {
  const sorted = [...ranges].sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
  const out: { lo: bigint; hi: bigint }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.lo <= last.hi + 1n) {
      if (r.hi > last.hi) last.hi = r.hi;
    } else {
      out.push({ lo: r.lo, hi: r.hi });
    }
  }
  return out;
}

export function netsToRanges(nets: readonly string[]): AddrRange[] {
  return mergeRanges(nets.map((n) => netToRange(parseNet(n))));
}

/** Render an interval as nft writes it: bare address, `addr/len` when it is a prefix, else `a-b`. */
export function formatRange(family: Family, r: AddrRange): string {
  if (r.lo === r.hi) return bigintToAddr(family, r.lo);
  const size = r.hi - r.lo + 1n;
  if ((size & (size - 1n)) === 0n && (r.lo & (size - 1n)) === 0n) {
    const hostBits = size.toString(2).length - 1;
    return `${bigintToAddr(family, r.lo)}/${BITS[family] - hostBits}`;
  }
  return `${bigintToAddr(family, r.lo)}-${bigintToAddr(family, r.hi)}`;
}

export function rangesEqual(a: readonly AddrRange[], b: readonly AddrRange[]): boolean {
  return a.length === b.length && a.every((r, i) => r.lo === b[i].lo && r.hi === b[i].hi);
}

// ---------------------------------------------------------------------------------------------
// Chain-level diff shared by the backends
// ---------------------------------------------------------------------------------------------

export interface RenderedRule {
  /** Rule text without the hash comment (what was hashed). */
  readonly text: string;
  readonly hash: string;
}

export interface ChainDiff {
  /** Desired chains absent from the kernel. */
  readonly create: readonly string[];
  /** Desired chains present with different rules. */
  readonly rewrite: readonly string[];
  /** Our chains in the kernel that are not desired (deleted only when in sync). */
  readonly stale: readonly string[];
}

/**
 * Compare desired rule-hash lists with read-back ones (the same array object: equal). `actual` maps every chain of ours found in
 * the kernel to its rules' hashes (null for a rule without our comment, which forces a rewrite).
 */
export function diffChains(
  desired: ReadonlyMap<string, readonly string[]>,
  actual: ReadonlyMap<string, readonly (string | null)[]>,
): ChainDiff {
  const create: string[] = [];
  const rewrite: string[] = [];
  const stale: string[] = [];
  for (const [name, hashes] of desired) {
    const have = actual.get(name);
    if (!have) create.push(name);
    else if (have !== hashes && (have.length !== hashes.length || hashes.some((h, i) => h !== have[i]))) rewrite.push(name);
  }
  for (const name of actual.keys()) if (!desired.has(name)) stale.push(name);
  return { create, rewrite, stale };
}

// ---------------------------------------------------------------------------------------------
// Compilation: DataplaneModel -> AclRuleset
// ---------------------------------------------------------------------------------------------

export interface AclCompileOptions {
  readonly ifacePrefix: string;
  readonly endpointToHostAction: EndpointToHostAction;
  readonly ipv6: boolean;
}

const ACCEPT: AclAction = { kind: 'accept' };
const DROP: AclAction = { kind: 'drop' };
const RETURN: AclAction = { kind: 'return' };
const PORT_PROTOCOLS: readonly L4Proto[] = ['tcp', 'udp', 'sctp', 'udplite'];
/** Protocols a port match without a protocol is expanded to. */
const DEFAULT_PORT_PROTOCOLS: readonly L4Proto[] = ['tcp', 'udp', 'sctp'];
/** ICMPv6 a workload needs to reach its host gateway (MLD 130-132, RS 133, NS 135, NA 136). */
const NDP_ICMPV6_TYPES = [130, 131, 132, 133, 135, 136];

const PROTOCOL_NUMBERS: Record<number, L4Proto> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };

export function normalizeProtocol(p: ProtocolMatch | undefined): L4Proto | undefined {
  if (p === undefined) return undefined;
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0 || p > 255) throw new AclError('E_ACL_MODEL', `invalid protocol number ${p}`);
    return PROTOCOL_NUMBERS[p] ?? p;
  }
  return p;
}

function nonEmpty<T>(a: readonly T[] | undefined): a is readonly T[] {
  return a !== undefined && a.length > 0;
}

function logPrefixFor(policy: CompiledPolicy, dir: Direction): string {
  const who = (policy.namespace ? `${policy.namespace}/` : '') + policy.name;
  const text = `rc ${dir === 'ingress' ? 'in' : 'out'} ${who}`.replace(/[^A-Za-z0-9 ._:/-]/g, '_');
  return `${text.slice(0, 27)}: `;
}

class Compiler {
  readonly model: DataplaneModel;
  readonly opts: AclCompileOptions;
  readonly families: readonly Family[];
  readonly chains = new Map<string, AclChain>();
  readonly sets = new Map<string, AclSet>();
  readonly skipped: string[] = [];
  /** Policy chains already built, per direction: policy id -> chain name (null: unknown policy). */
  readonly policyChains: Record<Direction, Map<string, string | null>> = { ingress: new Map(), egress: new Map() };
  /** What the previous compile built (null: compile everything). */
  readonly cache: AclCompileCache | null;
  /** What this compile built, for the next one. */
  readonly next: CacheGeneration;
  readonly stats = { policyChainsReused: 0, policyChainsBuilt: 0, endpointChainsReused: 0, endpointChainsBuilt: 0 };
  /** While a policy chain is built: the IP sets it asked for (replayed when the chain is reused). */
  private setRefs: Array<readonly [Family, string]> | null = null;

  constructor(model: DataplaneModel, opts: AclCompileOptions, cache: AclCompileCache | null) {
    this.model = model;
    this.opts = opts;
    this.families = opts.ipv6 ? [4, 6] : [4];
    const optsKey = `${opts.ifacePrefix}\u0000${opts.endpointToHostAction}\u0000${opts.ipv6}`;
    this.cache = cache && cache.optsKey === optsKey ? cache : null;
    this.next = { optsKey, policies: new Map(), endpoints: new Map(), sets: new Map() };
  }

  /**
   * An endpoint chain: reused (the same AclChain object) when the endpoint object and the policy
   * chains it jumps to are the ones the previous compile saw, else built by `rules()`.
   */
  endpointChain(name: string, ep: LocalEndpoint, deps: string, rules: () => AclRule[]): void {
    const old = this.cache?.generation.endpoints.get(name);
    let entry: EndpointChainEntry;
    if (old && old.ep === ep && old.deps === deps) {
      entry = old;
      this.stats.endpointChainsReused++;
    } else {
      entry = { ep, deps, chain: { name, table: 'filter', rules: rules() } };
      this.stats.endpointChainsBuilt++;
    }
    this.next.endpoints.set(name, entry);
    this.add(entry.chain);
  }

  /** The policy chains `pols` refers to, in order, as one string (null: not in the model). */
  policyDeps(pols: EndpointPolicies, dir: Direction): string {
    const names: string[] = [];
    for (const tier of pols.tiers) {
      names.push('|');
      for (const id of tier.policies) names.push(this.policyChain(id, dir) ?? '-');
    }
    names.push('|');
    for (const id of pols.profiles) names.push(this.policyChain(id, dir) ?? '-');
    return names.join(' ');
  }

  add(chain: AclChain): void {
    if (chain.name.length > MAX_CHAIN_NAME) {
      throw new AclError('E_ACL_MODEL', `chain name '${chain.name}' is longer than ${MAX_CHAIN_NAME} characters`);
    }
    this.chains.set(chain.name, chain);
  }

  compile(): AclRuleset {
    const pfx = `${this.opts.ifacePrefix}+`;
    const workloads: LocalEndpoint[] = [];
    const hosts: LocalEndpoint[] = [];
    /** Calico's all-interfaces host endpoint (`interfaceName: '*'`): every host interface no other one names. */
    let anyIface: LocalEndpoint | undefined;
    const seenIfaces = new Map<string, string>();
    const endpoints = [...this.model.endpoints.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const ep of endpoints) {
      if (ep.type === 'host' && ep.iface === '*') {
        if (anyIface) this.skipped.push(`${ep.id}: ${anyIface.id} is already the all-interfaces host endpoint`);
        else anyIface = ep;
        continue;
      }
      if (ep.type === 'host' && ep.iface === '') {
        this.skipped.push(`${ep.id}: host endpoint without an interface name (use '*' for all interfaces) is not programmed`);
        continue;
      }
      if (!/^[^\s/:"'\\+*]{1,15}$/.test(ep.iface)) {
        this.skipped.push(`${ep.id}: interface name '${ep.iface}' is not a valid interface name`);
        continue;
      }
      const isWorkloadIface = ep.iface.startsWith(this.opts.ifacePrefix);
      if (ep.type === 'workload' && !isWorkloadIface) {
        this.skipped.push(`${ep.id}: workload interface '${ep.iface}' lacks prefix '${this.opts.ifacePrefix}'`);
        continue;
      }
      if (ep.type === 'host' && isWorkloadIface) {
        this.skipped.push(`${ep.id}: host endpoint interface '${ep.iface}' has the workload prefix`);
        continue;
      }
      const other = seenIfaces.get(ep.iface);
      if (other) {
        this.skipped.push(`${ep.id}: interface '${ep.iface}' already belongs to ${other}`);
        continue;
      }
      seenIfaces.set(ep.iface, ep.id);
      (ep.type === 'workload' ? workloads : hosts).push(ep);
    }
    workloads.sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0));
    hosts.sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0));

    // Entry chains.
    this.add({
      name: CHAIN.forward,
      table: 'filter',
      hook: 'forward',
      rules: [
        { match: { iif: pfx, ctState: ['invalid'] }, action: DROP },
        { match: { oif: pfx, ctState: ['invalid'] }, action: DROP },
        { match: { iif: pfx, ctState: ['related', 'established'] }, action: ACCEPT },
        { match: { oif: pfx, ctState: ['related', 'established'] }, action: ACCEPT },
        { match: { iif: pfx }, action: { kind: 'jump', chain: CHAIN.fromWlDispatch } },
        { match: { oif: pfx }, action: { kind: 'jump', chain: CHAIN.toWlDispatch } },
        { match: { iif: pfx }, action: ACCEPT },
        { match: { oif: pfx }, action: ACCEPT },
      ],
    });
    const inputRules: AclRule[] = [
      { match: { iif: pfx, ctState: ['invalid'] }, action: DROP },
      { match: { iif: pfx, ctState: ['related', 'established'] }, action: ACCEPT },
      { match: { iif: pfx }, action: { kind: 'goto', chain: CHAIN.wlToHost } },
    ];
    const outputRules: AclRule[] = [{ match: { oif: pfx }, action: RETURN }];
    if (hosts.length > 0 || anyIface) {
      inputRules.push({ match: {}, action: { kind: 'goto', chain: CHAIN.fromHepDispatch } });
      outputRules.push({ match: {}, action: { kind: 'goto', chain: CHAIN.toHepDispatch } });
    }
    this.add({ name: CHAIN.input, table: 'filter', hook: 'input', rules: inputRules });
    this.add({ name: CHAIN.output, table: 'filter', hook: 'output', rules: outputRules });

    // Workload to host: neighbour discovery first (a workload's v6 gateway is the host's
    // link-local address), then the workload's egress policy, then the configured action.
    const wlToHost: AclRule[] = [];
    if (this.families.includes(6)) {
      for (const type of NDP_ICMPV6_TYPES) {
        wlToHost.push({ match: { family: 6, protocol: 'icmpv6', icmp: { type } }, action: ACCEPT });
      }
    }
    wlToHost.push({ match: {}, action: { kind: 'jump', chain: CHAIN.fromWlDispatch } });
    const hostAction = this.opts.endpointToHostAction;
    wlToHost.push({ match: {}, action: hostAction === 'Accept' ? ACCEPT : hostAction === 'Return' ? RETURN : DROP });
    this.add({ name: CHAIN.wlToHost, table: 'filter', rules: wlToHost });

    // Workload dispatch: unknown prefixed interfaces fall through to DROP (fail closed).
    const fromWl: DispatchTarget[] = [];
    const toWl: DispatchTarget[] = [];
    for (const ep of workloads) {
      const fw = endpointChainName('fw', ep);
      const tw = endpointChainName('tw', ep);
      fromWl.push({ iface: ep.iface, chain: fw });
      toWl.push({ iface: ep.iface, chain: tw });
      this.endpointChain(fw, ep, this.policyDeps(ep.egress, 'egress'), () => [
        { match: {}, action: { kind: 'clearMark', bits: MARK_ALL } },
        ...this.antiSpoof(ep),
        ...this.policyRules(ep.egress, 'egress', 'return'),
      ]);
      this.endpointChain(tw, ep, this.policyDeps(ep.ingress, 'ingress'), () => [
        { match: {}, action: { kind: 'clearMark', bits: MARK_ALL } },
        ...this.policyRules(ep.ingress, 'ingress', 'return'),
      ]);
    }
    this.add({ name: CHAIN.fromWlDispatch, table: 'filter', rules: dispatchRules('iif', fromWl, DROP) });
    this.add({ name: CHAIN.toWlDispatch, table: 'filter', rules: dispatchRules('oif', toWl, DROP) });

    // Host endpoints: interfaces not listed are left alone (no default action), unless there is
    // an all-interfaces one: it takes every interface but loopback (the host's own local
    // services, routecat's proxy and health ports among them, are never policed).
    if (hosts.length > 0 || anyIface) {
      const fromHep: DispatchTarget[] = [];
      const toHep: DispatchTarget[] = [];
      let fallbackIn: AclAction | null = null;
      let fallbackOut: AclAction | null = null;
      for (const ep of anyIface ? [...hosts, anyIface] : hosts) {
        const fh = endpointChainName('fh', ep);
        const th = endpointChainName('th', ep);
        if (ep === anyIface) {
          fallbackIn = { kind: 'goto', chain: fh };
          fallbackOut = { kind: 'goto', chain: th };
        } else {
          fromHep.push({ iface: ep.iface, chain: fh });
          toHep.push({ iface: ep.iface, chain: th });
        }
        const conntrack: AclRule[] = [
          { match: { ctState: ['invalid'] }, action: DROP },
          { match: { ctState: ['related', 'established'] }, action: ACCEPT },
        ];
        this.endpointChain(fh, ep, this.policyDeps(ep.ingress, 'ingress'), () => [
          ...conntrack,
          { match: {}, action: { kind: 'jump', chain: CHAIN.failsafeIn } },
          { match: {}, action: { kind: 'clearMark', bits: MARK_ALL } },
          ...this.policyRules(ep.ingress, 'ingress', 'accept'),
        ]);
        this.endpointChain(th, ep, this.policyDeps(ep.egress, 'egress'), () => [
          ...conntrack,
          { match: {}, action: { kind: 'jump', chain: CHAIN.failsafeOut } },
          { match: {}, action: { kind: 'clearMark', bits: MARK_ALL } },
          ...this.policyRules(ep.egress, 'egress', 'accept'),
        ]);
      }
      const loopback = (key: 'iif' | 'oif'): AclRule[] => (anyIface ? [{ match: { [key]: 'lo' }, action: RETURN }] : []);
      this.add({ name: CHAIN.fromHepDispatch, table: 'filter', rules: [...dispatchRules('iif', fromHep, null), ...loopback('iif'), ...(fallbackIn ? [{ match: {}, action: fallbackIn }] : [])] });
      this.add({ name: CHAIN.toHepDispatch, table: 'filter', rules: [...dispatchRules('oif', toHep, null), ...loopback('oif'), ...(fallbackOut ? [{ match: {}, action: fallbackOut }] : [])] });
      this.add({ name: CHAIN.failsafeIn, table: 'filter', rules: failsafeRules(this.model.failsafeInbound) });
      this.add({ name: CHAIN.failsafeOut, table: 'filter', rules: failsafeRules(this.model.failsafeOutbound) });
    }

    this.add({ name: CHAIN.natPostrouting, table: 'nat', hook: 'postrouting', rules: this.natRules() });

    const entryOrder = [CHAIN.forward, CHAIN.input, CHAIN.output, CHAIN.natPostrouting] as string[];
    const chains = [...this.chains.values()].sort((a, b) => {
      const ea = entryOrder.indexOf(a.name);
      const eb = entryOrder.indexOf(b.name);
      if (ea !== eb) return (ea < 0 ? 99 : ea) - (eb < 0 ? 99 : eb);
      return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
    });
    const sets = [...this.sets.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { chains, sets, skipped: this.skipped };
  }

  antiSpoof(ep: LocalEndpoint): AclRule[] {
    const out: AclRule[] = [];
    for (const family of this.families) {
      const own = family === 4 ? ep.ipv4Nets : ep.ipv6Nets;
      const allowed = canonicalNets([...own, ...ep.allowSpoofedSourcePrefixes], family);
      if (allowed.length === 0) out.push({ match: { family }, action: DROP });
      else out.push({ match: { family, addrs: [{ dir: 'src', negate: true, nets: allowed }] }, action: DROP });
    }
    return out;
  }

  /**
   * Tiers then profiles. Per tier: clear PASS, jump to each policy while PASS is clear, leave
   * (`onAllow`) as soon as ACCEPT is set; end of tier without PASS drops, unless the tier's
   * defaultAction is Pass. Profiles: jump, leave on ACCEPT. Anything that falls off the end is
   * dropped.
   */
  policyRules(pols: EndpointPolicies, dir: Direction, onAllow: 'return' | 'accept'): AclRule[] {
    const allowed: AclRule = { match: { markAll: MARK_ACCEPT }, action: onAllow === 'return' ? RETURN : ACCEPT };
    const out: AclRule[] = [];
    for (const tier of pols.tiers) {
      out.push({ match: {}, action: { kind: 'clearMark', bits: MARK_PASS } });
      for (const id of tier.policies) {
        const chain = this.policyChain(id, dir);
        if (!chain) continue;
        out.push({ match: { markNone: MARK_PASS }, action: { kind: 'jump', chain } });
        out.push(allowed);
      }
      if (!tier.passAtEnd) out.push({ match: { markNone: MARK_PASS }, action: DROP });
    }
    for (const id of pols.profiles) {
      const chain = this.policyChain(id, dir);
      if (!chain) continue;
      out.push({ match: {}, action: { kind: 'jump', chain } });
      out.push(allowed);
    }
    out.push({ match: {}, action: DROP });
    return out;
  }

  policyChain(id: string, dir: Direction): string | null {
    const known = this.policyChains[dir].get(id);
    if (known !== undefined) return known;
    const key = `${id}\u0000${dir}`;
    const policy = this.model.policies.get(id);
    if (!policy) {
      this.skipped.push(`policy '${id}' (${dir}) is referenced but not in the model; treated as matching nothing`);
      this.policyChains[dir].set(id, null);
      return null;
    }
    const name = policyChainName(policy, dir);
    this.policyChains[dir].set(id, name);
    const old = this.cache?.generation.policies.get(key);
    // Reusable when it is the same compiled policy and every IP set it named is still (or still
    // not) in the model: set names depend only on ids, members live in the sets.
    if (old && old.policy === policy && old.setRefs.every(([, id], i) => this.model.ipSets.has(id) === old.setPresent[i])) {
      for (const [family, id] of old.setRefs) this.ipSet(family, id);
      this.skipped.push(...old.skipped);
      this.next.policies.set(key, old);
      this.add(old.chain);
      this.stats.policyChainsReused++;
      return name;
    }
    const rules: AclRule[] = [];
    const source = dir === 'ingress' ? policy.ingress : policy.egress;
    const skippedBefore = this.skipped.length;
    const outer = this.setRefs;
    const setRefs: Array<readonly [Family, string]> = [];
    this.setRefs = setRefs;
    try {
      for (const rule of source) rules.push(...this.compileRule(policy, dir, rule));
    } finally {
      this.setRefs = outer;
    }
    const chain: AclChain = { name, table: 'filter', rules };
    this.next.policies.set(key, {
      policy,
      setRefs,
      setPresent: setRefs.map(([, id]) => this.model.ipSets.has(id)),
      skipped: this.skipped.slice(skippedBefore),
      chain,
    });
    this.add(chain);
    this.stats.policyChainsBuilt++;
    return name;
  }

  compileRule(policy: CompiledPolicy, dir: Direction, rule: CompiledRule): AclRule[] {
    if (rule.never) return [];
    const matches = this.ruleMatches(rule.match, `${policy.id} ${dir} rule ${rule.index}`);
    if (matches.length === 0) return [];
    switch (rule.action) {
      case 'deny':
        return matches.map((match) => ({ match, action: DROP }));
      case 'log': {
        const prefix = logPrefixFor(policy, dir);
        return matches.map((match) => ({ match, action: { kind: 'log', prefix } }));
      }
      case 'allow':
      case 'pass': {
        const bits = rule.action === 'allow' ? MARK_ACCEPT : MARK_PASS;
        return [
          ...matches.map((match): AclRule => ({ match, action: { kind: 'setMark', bits } })),
          { match: { markAll: bits }, action: RETURN },
        ];
      }
      default:
        throw new AclError('E_ACL_MODEL', `${policy.id}: unknown rule action '${String(rule.action)}'`);
    }
  }

  /**
   * One CompiledRule's match as kernel matches: one per IP family it can match, times one per
   * protocol when ports are given without a protocol. Empty when it can never match.
   */
  ruleMatches(m: RuleMatch, where: string): AclMatch[] {
    let families = this.families.filter((f) => m.ipVersion === undefined || m.ipVersion === f);
    const proto = normalizeProtocol(m.protocol);
    let notProto = normalizeProtocol(m.notProtocol);
    if (proto === 'icmp') families = families.filter((f) => f === 4);
    if (proto === 'icmpv6') families = families.filter((f) => f === 6);
    if (proto !== undefined && notProto !== undefined) {
      if (proto === notProto) return [];
      notProto = undefined;
    }
    const hasPorts = [m.srcPorts, m.notSrcPorts, m.dstPorts, m.notDstPorts].some(nonEmpty);
    let protos: (L4Proto | undefined)[];
    if (hasPorts) {
      if (proto === undefined) {
        protos = DEFAULT_PORT_PROTOCOLS.filter((p) => p !== notProto);
        notProto = undefined;
      } else if (!PORT_PROTOCOLS.includes(proto)) {
        return []; // ports on a protocol without ports never match
      } else {
        protos = [proto];
      }
    } else {
      protos = [proto];
    }
    for (const pr of [...(m.srcPorts ?? []), ...(m.notSrcPorts ?? []), ...(m.dstPorts ?? []), ...(m.notDstPorts ?? [])]) {
      if (!Number.isInteger(pr.first) || !Number.isInteger(pr.last) || pr.first < 0 || pr.last > 65535 || pr.first > pr.last) {
        throw new AclError('E_ACL_MODEL', `${where}: invalid port range ${pr.first}-${pr.last}`);
      }
    }
    const ports: PortMatch[] = [];
    if (nonEmpty(m.srcPorts)) ports.push({ dir: 'src', negate: false, ranges: m.srcPorts });
    if (nonEmpty(m.notSrcPorts)) ports.push({ dir: 'src', negate: true, ranges: m.notSrcPorts });
    if (nonEmpty(m.dstPorts)) ports.push({ dir: 'dst', negate: false, ranges: m.dstPorts });
    if (nonEmpty(m.notDstPorts)) ports.push({ dir: 'dst', negate: true, ranges: m.notDstPorts });
    if ((m.icmp && m.icmp.type === undefined && m.icmp.code !== undefined) || (m.notIcmp && m.notIcmp.type === undefined && m.notIcmp.code !== undefined)) {
      this.skipped.push(`${where}: ICMP code without a type cannot be programmed; rule omitted`);
      return [];
    }
    for (const i of [m.icmp, m.notIcmp]) {
      for (const v of [i?.type, i?.code]) {
        if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 255)) {
          throw new AclError('E_ACL_MODEL', `${where}: invalid ICMP type/code ${v}: must be 0-255`);
        }
      }
    }

    const out: AclMatch[] = [];
    for (const family of families) {
      const addrs: AddrMatch[] = [];
      let possible = true;
      const nets = (list: readonly string[] | undefined, dir: 'src' | 'dst', negate: boolean): void => {
        if (!nonEmpty(list)) return;
        const mine = canonicalNets(list, family);
        if (mine.length > 0) addrs.push({ dir, negate, nets: mine });
        else if (!negate) possible = false; // only other-family nets: this family can't match
      };
      nets(m.srcNets, 'src', false);
      nets(m.notSrcNets, 'src', true);
      nets(m.dstNets, 'dst', false);
      nets(m.notDstNets, 'dst', true);
      const sets = (ids: readonly string[] | undefined, dir: 'src' | 'dst', negate: boolean): void => {
        for (const id of ids ?? []) {
          const set = this.ipSet(family, id);
          if (set) addrs.push({ dir, negate, set });
          else if (!negate) possible = false; // unknown set = empty set
        }
      };
      sets(m.srcIpSets, 'src', false);
      sets(m.notSrcIpSets, 'src', true);
      sets(m.dstIpSets, 'dst', false);
      sets(m.notDstIpSets, 'dst', true);
      if (!possible) continue;

      const icmpProto: L4Proto = family === 4 ? 'icmp' : 'icmpv6';
      for (const p of protos) {
        let protocol = p;
        let icmp: IcmpMatch | undefined;
        let notIcmp: IcmpMatch | undefined;
        if (m.icmp?.type !== undefined) {
          if (protocol === undefined) protocol = icmpProto;
          if (protocol !== icmpProto || notProto === icmpProto) continue;
          icmp = { type: m.icmp.type, code: m.icmp.code };
        }
        if (m.notIcmp?.type !== undefined) {
          // As in Calico, ICMP type matches imply the ICMP protocol of the family.
          if (protocol === undefined) protocol = icmpProto;
          if (protocol !== icmpProto || notProto === icmpProto) continue;
          notIcmp = { type: m.notIcmp.type, code: m.notIcmp.code };
        }
        out.push(clean({ family, protocol, notProtocol: protocol === undefined ? notProto : undefined, addrs, ports, icmp, notIcmp }));
      }
    }
    return collapseFamilies(out, this.families);
  }

  ipSet(family: Family, id: string): string | null {
    this.setRefs?.push([family, id]);
    const src = this.model.ipSets.get(id);
    if (!src) return null;
    const name = ipSetName(family, id);
    if (!this.sets.has(name)) {
      // The same AclSet object while its members are unchanged (backends cache per object).
      const nets = family === 4 ? src.ipv4 : src.ipv6;
      const old = this.cache?.generation.sets.get(name);
      const key = nets.join(',');
      const set = old && old.key === key ? old.set : { name, family, members: canonicalNets(nets, family) };
      this.next.sets.set(name, { key, set });
      this.sets.set(name, set);
    }
    return name;
  }

  natRules(): AclRule[] {
    const out: AclRule[] = [];
    for (const family of this.families) {
      const all: string[] = [];
      const masq: string[] = [];
      for (const pool of this.model.pools) {
        const p = parseNet(pool.cidr);
        if (p.family !== family) continue;
        all.push(pool.cidr);
        if (pool.natOutgoing && !pool.disabled) masq.push(pool.cidr);
      }
      if (masq.length === 0) continue;
      out.push({
        match: {
          family,
          addrs: [
            { dir: 'src', negate: false, nets: canonicalNets(masq, family) },
            { dir: 'dst', negate: true, nets: canonicalNets(all, family) },
          ],
        },
        action: { kind: 'masquerade' },
      });
    }
    return out;
  }
}

/**
 * When every family produced the same family-independent match (no addresses, no ICMP), one
 * family-less rule does: iptables writes it to both tables, nftables writes one inet rule.
 */
function collapseFamilies(matches: AclMatch[], families: readonly Family[]): AclMatch[] {
  if (families.length < 2) return matches;
  const familyFree = (m: AclMatch): boolean => !m.addrs && !m.icmp && !m.notIcmp && m.protocol !== 'icmp' && m.protocol !== 'icmpv6';
  const key = (m: AclMatch): string => JSON.stringify({ ...m, family: undefined });
  const out: AclMatch[] = [];
  const done = new Set<number>();
  for (let i = 0; i < matches.length; i++) {
    if (done.has(i)) continue;
    const m = matches[i];
    if (familyFree(m) && m.family !== undefined) {
      const twins = families.map((f) => matches.findIndex((o, j) => !done.has(j) && o.family === f && key(o) === key(m)));
      if (twins.every((j) => j >= 0)) {
        for (const j of twins) done.add(j);
        const { family: _family, ...rest } = m;
        out.push(rest);
        continue;
      }
    }
    done.add(i);
    out.push(m);
  }
  return out;
}

function clean(m: AclMatch): AclMatch {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    if (k === 'icmp' || k === 'notIcmp') {
      const i = v as IcmpMatch;
      out[k] = i.code === undefined ? { type: i.type } : { type: i.type, code: i.code };
      continue;
    }
    out[k] = v;
  }
  return out as AclMatch;
}

function dispatchRules(key: 'iif' | 'oif', targets: DispatchTarget[], fallback: AclAction | null): AclRule[] {
  const rules: AclRule[] = [];
  if (targets.length > 0) rules.push({ match: {}, action: { kind: 'dispatch', key, targets } });
  if (fallback) rules.push({ match: {}, action: fallback });
  return rules;
}

function failsafeRules(list: readonly { protocol: 'tcp' | 'udp'; port: number }[]): AclRule[] {
  const byProto = new Map<'tcp' | 'udp', number[]>();
  for (const f of list) {
    if (!Number.isInteger(f.port) || f.port < 0 || f.port > 65535) {
      throw new AclError('E_ACL_MODEL', `invalid failsafe port ${f.protocol}:${f.port}`);
    }
    const ports = byProto.get(f.protocol) ?? [];
    if (!ports.includes(f.port)) ports.push(f.port);
    byProto.set(f.protocol, ports);
  }
  const rules: AclRule[] = [];
  for (const proto of ['tcp', 'udp'] as const) {
    const ports = (byProto.get(proto) ?? []).sort((a, b) => a - b);
    if (ports.length === 0) continue;
    rules.push({
      match: { protocol: proto, ports: [{ dir: 'dst', negate: false, ranges: ports.map((p) => ({ first: p, last: p })) }] },
      action: ACCEPT,
    });
  }
  return rules;
}

/**
 * DataplaneModel -> the backend-neutral rule model. Pure apart from `cache`; throws AclError on
 * unusable values (and then leaves the cache as it was).
 *
 * With a cache, chains whose inputs are the very objects the previous compile saw (a
 * CompiledPolicy, a LocalEndpoint, the names of the policy chains an endpoint jumps to) are
 * returned as the same AclChain objects, and sets with unchanged members as the same AclSet
 * objects, so the backends can keep what they rendered from them (see AclRenderCache). The output
 * equals a from-scratch compile of the same model.
 */
export function compileAclModel(model: DataplaneModel, opts: AclCompileOptions, cache?: AclCompileCache): AclRuleset {
  const compiler = new Compiler(model, opts, cache ?? null);
  const ruleset = compiler.compile();
  if (cache) {
    cache.generation = compiler.next;
    cache.optsKey = compiler.next.optsKey;
    cache.lastStats = { ...compiler.stats };
  }
  return ruleset;
}

interface PolicyChainEntry {
  readonly policy: CompiledPolicy;
  /** IP sets the chain's rules asked for, and whether each was in the model then. */
  readonly setRefs: ReadonlyArray<readonly [Family, string]>;
  readonly setPresent: readonly boolean[];
  readonly skipped: readonly string[];
  readonly chain: AclChain;
}

interface EndpointChainEntry {
  readonly ep: LocalEndpoint;
  readonly deps: string;
  readonly chain: AclChain;
}

interface CacheGeneration {
  readonly optsKey: string;
  /** `${policy id}\0${dir}` -> chain. */
  readonly policies: Map<string, PolicyChainEntry>;
  /** Endpoint chain name -> chain. */
  readonly endpoints: Map<string, EndpointChainEntry>;
  /** Set name -> members as the model listed them (joined) and the AclSet made from them. */
  readonly sets: Map<string, { readonly key: string; readonly set: AclSet }>;
}

export interface AclCompileStats {
  readonly policyChainsReused: number;
  readonly policyChainsBuilt: number;
  readonly endpointChainsReused: number;
  readonly endpointChainsBuilt: number;
}

/**
 * What one dataplane's compiles share: the previous compile's chains and sets by their inputs.
 * Holds only what the last compile produced (anything no longer in the model is dropped).
 */
export class AclCompileCache {
  optsKey = '';
  generation: CacheGeneration = { optsKey: '', policies: new Map(), endpoints: new Map(), sets: new Map() };
  /** Reuse counts of the last compile (tests, debug logs). */
  lastStats: AclCompileStats = { policyChainsReused: 0, policyChainsBuilt: 0, endpointChainsReused: 0, endpointChainsBuilt: 0 };
}

/**
 * Per-object memo for what a backend derives from compiled chains and sets: keyed by the AclChain /
 * AclSet object (which AclCompileCache keeps identical while its inputs are), so an unchanged chain
 * is rendered and hashed once. Weak: entries go with the objects.
 */
export class ObjectMemo<K extends object, V> {
  private readonly map = new WeakMap<K, V>();
  /** Computations done (misses), for tests. */
  misses = 0;
  get(key: K, make: (key: K) => V): V {
    let v = this.map.get(key);
    if (v === undefined) {
      v = make(key);
      this.map.set(key, v);
      this.misses++;
    }
    return v;
  }
}

/** Every chain a rule of `rules` jumps or goes to (for ordering and checks). */
export function chainTargets(rule: AclRule): string[] {
  const a = rule.action;
  if (a.kind === 'jump' || a.kind === 'goto') return [a.chain];
  if (a.kind === 'dispatch') return a.targets.map((t) => t.chain);
  return [];
}

/** Runs async jobs one after another (apply, readBack and cleanup of one dataplane never overlap). */
export class OneAtATime {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** Milliseconds since a performance.now() reading, rounded to microseconds. */
export function elapsedSince(start: number): number {
  return Math.round((performance.now() - start) * 1000) / 1000;
}
