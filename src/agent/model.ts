/**
 * The compiled model: what the calculation (src/agent/calc/) produces from the datastore view and
 * what every consumer reads — the kernel dataplanes (iptables, nftables), the route and interface
 * programmers, and `routecat ctl explain`. It is plain data with stable ids so that two computations
 * of the same state compare equal and a dataplane can diff old against new.
 */

export type Direction = 'ingress' | 'egress';

/** What a rule does when it matches. `log` records the packet and carries on to the next rule. */
export type RuleAction = 'allow' | 'deny' | 'pass' | 'log';

/** Inclusive port range; a single port has first === last. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

/**
 * Protocol as the kernel knows it: lower-case name for the common ones (`tcp`, `udp`, `icmp`,
 * `icmpv6`, `sctp`, `udplite`) or the IANA number for anything else.
 */
export type ProtocolMatch = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'sctp' | 'udplite' | number;

/**
 * One rule's match criteria. Every present field must match (AND). Within one array field any
 * element matches (OR) — except the *IpSets fields, where the packet's address must be in EVERY
 * listed set (Calico's "selector AND network set" semantics), and the not* arrays, where the packet
 * must match NONE of the elements.
 */
export interface RuleMatch {
  readonly ipVersion?: 4 | 6;
  readonly protocol?: ProtocolMatch;
  readonly notProtocol?: ProtocolMatch;
  readonly srcNets?: readonly string[];
  readonly notSrcNets?: readonly string[];
  readonly dstNets?: readonly string[];
  readonly notDstNets?: readonly string[];
  /** Ids of IpSet entries in DataplaneModel.ipSets. */
  readonly srcIpSets?: readonly string[];
  readonly notSrcIpSets?: readonly string[];
  readonly dstIpSets?: readonly string[];
  readonly notDstIpSets?: readonly string[];
  readonly srcPorts?: readonly PortRange[];
  readonly notSrcPorts?: readonly PortRange[];
  readonly dstPorts?: readonly PortRange[];
  readonly notDstPorts?: readonly PortRange[];
  readonly icmp?: { readonly type?: number; readonly code?: number };
  readonly notIcmp?: { readonly type?: number; readonly code?: number };
}

export interface CompiledRule {
  readonly action: RuleAction;
  readonly match: RuleMatch;
  /** Index of the rule in the source policy's ingress or egress list (for explain and counters). */
  readonly index: number;
  /**
   * True when the source rule cannot be represented (e.g. a selector that matched an unknown
   * field); such a rule never matches and is reported, it is not silently widened.
   */
  readonly never?: boolean;
}

/** A policy (GlobalNetworkPolicy or NetworkPolicy) or a Profile, compiled. */
export interface CompiledPolicy {
  /** Stable id, e.g. `gnp/default.allow-web`, `np/tenant-a/default.web`, `pro/kns.tenant-a`. */
  readonly id: string;
  readonly kind: 'GlobalNetworkPolicy' | 'NetworkPolicy' | 'Profile';
  readonly name: string;
  readonly namespace?: string;
  /** Tier name (`default` when unset); undefined for profiles. */
  readonly tier?: string;
  readonly ingress: readonly CompiledRule[];
  readonly egress: readonly CompiledRule[];
}

/** The policies of one tier that apply to one endpoint in one direction, in evaluation order. */
export interface TierRef {
  readonly tier: string;
  /** CompiledPolicy ids, already ordered by (order, name). */
  readonly policies: readonly string[];
  /** The tier's defaultAction is Pass: a packet no policy decided goes on to the next tier. */
  readonly passAtEnd?: true;
}

export interface EndpointPolicies {
  /** Tiers (in order) that have at least one policy applying in this direction. */
  readonly tiers: readonly TierRef[];
  /** Profile ids applied after the tiers (when no tier applies, or the last tier passed). */
  readonly profiles: readonly string[];
}

export interface LocalEndpoint {
  /** `wep/<namespace>/<name>` or `hep/<name>`. */
  readonly id: string;
  readonly type: 'workload' | 'host';
  readonly name: string;
  readonly namespace?: string;
  /** Host-side interface (workloads: the cali* veth or tap); for host endpoints may be '*' or ''. */
  readonly iface: string;
  readonly mac?: string;
  /** Workload addresses as CIDRs (/32 and /128 normally), sorted. */
  readonly ipv4Nets: readonly string[];
  readonly ipv6Nets: readonly string[];
  /** Extra source prefixes the workload may send from (anti-spoofing exceptions). */
  readonly allowSpoofedSourcePrefixes: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly ingress: EndpointPolicies;
  readonly egress: EndpointPolicies;
}

/** A set of addresses a rule refers to by id; members are CIDRs, sorted and de-duplicated. */
export interface IpSet {
  /** Stable, short, kernel-safe id derived from the selector text (e.g. `s:3kq9x0a1b2c3`). */
  readonly id: string;
  /** Human-readable origin, e.g. the selector text. */
  readonly source: string;
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
}

export interface PoolInfo {
  readonly name: string;
  readonly cidr: string;
  readonly natOutgoing: boolean;
  readonly disabled: boolean;
  /** IPPool disableBGPExport: routes inside the pool are not advertised. */
  readonly disableBGPExport?: true;
}

/** Everything the dataplane needs, recomputed (cheaply, incrementally) from the datastore view. */
export interface DataplaneModel {
  /** This host's name. */
  readonly hostname: string;
  /** Local endpoints by id. */
  readonly endpoints: ReadonlyMap<string, LocalEndpoint>;
  /** Only policies and profiles referenced by at least one local endpoint. */
  readonly policies: ReadonlyMap<string, CompiledPolicy>;
  /** Only IP sets referenced by at least one of those policies. */
  readonly ipSets: ReadonlyMap<string, IpSet>;
  readonly pools: readonly PoolInfo[];
  /** Calico's FelixConfiguration.failsafeInboundHostPorts / failsafeOutboundHostPorts. */
  readonly failsafeInbound: readonly { protocol: 'tcp' | 'udp'; port: number }[];
  readonly failsafeOutbound: readonly { protocol: 'tcp' | 'udp'; port: number }[];
  /** Bad resources found in the view, skipped: key and reason. */
  readonly problems: readonly { key: string; reason: string }[];
}

/** Packet as `explain` and the reference evaluator see it. */
export interface PacketSpec {
  readonly src: string;
  readonly dst: string;
  readonly protocol: ProtocolMatch;
  readonly srcPort?: number;
  readonly dstPort?: number;
  readonly icmpType?: number;
  readonly icmpCode?: number;
}
