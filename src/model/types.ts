/**
 * The spec of every Calico v3 kind routecat stores, with Calico's exact JSON field names
 * (projectcalico/api pkg/apis/projectcalico/v3 and libcalico-go's Node/WorkloadEndpoint).
 * Types only: no behaviour. Fields marked "defaulted" are always present after validateResource.
 */
import type { Resource } from './resource.ts';

export type EncapMode = 'Never' | 'CrossSubnet' | 'Always';
export type Action = 'Allow' | 'Deny' | 'Log' | 'Pass';
export type PolicyType = 'Ingress' | 'Egress';
export type ProtocolName = 'TCP' | 'UDP' | 'ICMP' | 'ICMPv6' | 'SCTP' | 'UDPLite';
/** A protocol name or number 1-255. */
export type Protocol = ProtocolName | number;
/** A port number, a range "min:max", or a named port. */
export type Port = number | string;
/** A Go duration string such as "90s" or "1m30s". */
export type Duration = string;
/** An AS number, 1..4294967295. */
export type ASNumber = number;

export interface SecretKeyRef {
  name: string;
  key: string;
  optional?: boolean;
}

export interface BGPPassword {
  secretKeyRef?: SecretKeyRef;
}

// ---- IPPool -----------------------------------------------------------------------------------

export type IPPoolAllowedUse = 'Workload' | 'Tunnel';

export interface IPPoolSpec {
  cidr: string;
  /** defaulted: 26 for IPv4, 122 for IPv6 */
  blockSize: number;
  /** defaulted: Never */
  ipipMode: EncapMode;
  /** defaulted: Never */
  vxlanMode: EncapMode;
  /** defaulted: false */
  natOutgoing: boolean;
  /** defaulted: false */
  disabled: boolean;
  /** defaulted: false */
  disableBGPExport: boolean;
  /** defaulted: all() */
  nodeSelector: string;
  namespaceSelector?: string;
  /** defaulted: [Workload, Tunnel] */
  allowedUses: IPPoolAllowedUse[];
  /** defaulted: Automatic */
  assignmentMode: 'Automatic' | 'Manual';
}

// ---- BGP --------------------------------------------------------------------------------------

export interface CIDRBlock {
  cidr: string;
}

export interface Community {
  name: string;
  /** "aa:nn" (standard) or "aa:nn:mm" (large). */
  value: string;
}

export interface PrefixAdvertisement {
  cidr: string;
  /** Community names from `communities`, or literal values. */
  communities: string[];
}

export interface BGPConfigurationSpec {
  logSeverityScreen?: string;
  nodeToNodeMeshEnabled?: boolean;
  asNumber?: ASNumber;
  serviceLoadBalancerIPs?: CIDRBlock[];
  serviceExternalIPs?: CIDRBlock[];
  serviceClusterIPs?: CIDRBlock[];
  serviceLoadBalancerAggregation?: 'Enabled' | 'Disabled';
  communities?: Community[];
  prefixAdvertisements?: PrefixAdvertisement[];
  listenPort?: number;
  nodeMeshPassword?: BGPPassword;
  nodeMeshMaxRestartTime?: Duration;
  bindMode?: 'None' | 'NodeIP';
  ignoredInterfaces?: string[];
  localWorkloadPeeringIPV4?: string;
  localWorkloadPeeringIPV6?: string;
}

export interface BGPPeerSpec {
  node?: string;
  nodeSelector?: string;
  /** An IP, "ip:port" or "[ipv6]:port". */
  peerIP?: string;
  asNumber?: ASNumber;
  localASNumber?: ASNumber;
  peerSelector?: string;
  keepOriginalNextHop?: boolean;
  nextHopMode?: 'Auto' | 'Self' | 'Keep';
  password?: BGPPassword;
  sourceAddress?: 'UseNodeIP' | 'None';
  maxRestartTime?: Duration;
  numAllowedLocalASNumbers?: number;
  ttlSecurity?: number;
  reachableBy?: string;
  filters?: string[];
  localWorkloadSelector?: string;
  reversePeering?: 'Auto' | 'Manual';
  keepaliveTime?: Duration;
}

// ---- Node -------------------------------------------------------------------------------------

export interface NodeBGPSpec {
  asNumber?: ASNumber;
  /** CIDR form, e.g. 10.0.0.1/24 (host bits allowed: it is an interface address). */
  ipv4Address?: string;
  ipv6Address?: string;
  ipv4IPIPTunnelAddr?: string;
  /** IPv4 dotted form. */
  routeReflectorClusterID?: string;
}

export interface OrchRef {
  nodeName?: string;
  orchestrator: string;
}

export interface NodeAddress {
  address: string;
  type?: 'InternalIP' | 'ExternalIP' | 'CalicoNodeIP';
}

export interface NodeWireguardSpec {
  interfaceIPv4Address?: string;
  interfaceIPv6Address?: string;
}

export interface NodeSpec {
  bgp?: NodeBGPSpec;
  ipv4VXLANTunnelAddr?: string;
  vxlanTunnelMACAddr?: string;
  ipv6VXLANTunnelAddr?: string;
  vxlanTunnelMACAddrV6?: string;
  orchRefs?: OrchRef[];
  addresses?: NodeAddress[];
  wireguard?: NodeWireguardSpec;
}

// ---- Rules and policy -------------------------------------------------------------------------

export interface ICMPFields {
  type?: number;
  code?: number;
}

export interface ServiceAccountMatch {
  names?: string[];
  selector?: string;
}

export interface ServiceMatch {
  name?: string;
  namespace?: string;
}

export interface EntityRule {
  nets?: string[];
  notNets?: string[];
  selector?: string;
  notSelector?: string;
  namespaceSelector?: string;
  serviceAccounts?: ServiceAccountMatch;
  ports?: Port[];
  notPorts?: Port[];
  services?: ServiceMatch;
}

export interface HTTPPath {
  exact?: string;
  prefix?: string;
}

export interface HTTPMatch {
  methods?: string[];
  paths?: HTTPPath[];
}

export interface RuleMetadata {
  annotations?: Record<string, string>;
}

export interface Rule {
  action: Action;
  ipVersion?: 4 | 6;
  protocol?: Protocol;
  notProtocol?: Protocol;
  icmp?: ICMPFields;
  notICMP?: ICMPFields;
  source?: EntityRule;
  destination?: EntityRule;
  http?: HTTPMatch;
  metadata?: RuleMetadata;
}

export interface ProfileSpec {
  ingress?: Rule[];
  egress?: Rule[];
  labelsToApply?: Record<string, string>;
}

export interface NetworkPolicySpec {
  /** defaulted: "default" */
  tier: string;
  order?: number;
  /** defaulted: all() */
  selector: string;
  /** defaulted as Calico: [Ingress] unless egress rules exist (then [Egress] or [Ingress, Egress]). */
  types: PolicyType[];
  ingress?: Rule[];
  egress?: Rule[];
  serviceAccountSelector?: string;
  performanceHints?: 'AssumeNeededOnEveryNode'[];
}

export interface GlobalNetworkPolicySpec extends NetworkPolicySpec {
  namespaceSelector?: string;
  doNotTrack?: boolean;
  preDNAT?: boolean;
  applyOnForward?: boolean;
}

export interface TierSpec {
  order?: number;
  /** defaulted: Deny */
  defaultAction: 'Deny' | 'Pass';
}

// ---- Endpoints and sets -----------------------------------------------------------------------

export interface EndpointPort {
  name: string;
  protocol: Protocol;
  port: number;
}

export interface WorkloadEndpointPort extends EndpointPort {
  hostPort?: number;
  hostIP?: string;
}

export interface IPNAT {
  internalIP: string;
  externalIP: string;
}

export interface WorkloadEndpointSpec {
  orchestrator?: string;
  workload?: string;
  node: string;
  containerID?: string;
  pod?: string;
  endpoint?: string;
  serviceAccountName?: string;
  ipNetworks?: string[];
  ipNATs?: IPNAT[];
  ipv4Gateway?: string;
  ipv6Gateway?: string;
  profiles?: string[];
  interfaceName: string;
  mac?: string;
  ports?: WorkloadEndpointPort[];
  allowSpoofedSourcePrefixes?: string[];
}

export interface HostEndpointSpec {
  node: string;
  interfaceName?: string;
  expectedIPs?: string[];
  profiles?: string[];
  ports?: EndpointPort[];
}

export interface NetworkSetSpec {
  nets?: string[];
}

export type GlobalNetworkSetSpec = NetworkSetSpec;

// ---- Configuration ----------------------------------------------------------------------------

export interface ProtoPort {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  net?: string;
}

export interface RouteTableRange {
  min: number;
  max: number;
}

/**
 * Felix's configuration fields routecat knows (a subset of Calico's ~200, see validate.ts for the
 * full accepted list and types). All optional: absent means Felix's built-in default.
 */
export interface FelixConfigurationSpec {
  logSeverityScreen?: string;
  reportingInterval?: Duration;
  routeRefreshInterval?: Duration;
  iptablesRefreshInterval?: Duration;
  ipsetsRefreshInterval?: Duration;
  interfacePrefix?: string;
  defaultEndpointToHostAction?: 'Drop' | 'Return' | 'Accept';
  failsafeInboundHostPorts?: ProtoPort[];
  failsafeOutboundHostPorts?: ProtoPort[];
  healthEnabled?: boolean;
  healthHost?: string;
  healthPort?: number;
  prometheusMetricsEnabled?: boolean;
  prometheusMetricsPort?: number;
  natOutgoingAddress?: string;
  routeTableRange?: RouteTableRange;
  routeTableRanges?: RouteTableRange[];
  chainInsertMode?: 'Insert' | 'Append';
  iptablesBackend?: 'Legacy' | 'NFT' | 'Auto';
  bpfEnabled?: boolean;
  allowVXLANPacketsFromWorkloads?: boolean;
  allowIPIPPacketsFromWorkloads?: boolean;
  deviceRouteProtocol?: number;
  removeExternalRoutes?: boolean;
  routeSource?: 'CalicoIPAM' | 'WorkloadIPs';
  endpointReportingEnabled?: boolean;
  [field: string]: unknown;
}

export interface ClusterInformationSpec {
  clusterGUID?: string;
  clusterType?: string;
  calicoVersion?: string;
  datastoreReady?: boolean;
  variant?: string;
}

// ---- Resources --------------------------------------------------------------------------------

export type IPPool = Resource<IPPoolSpec>;
export type BGPConfiguration = Resource<BGPConfigurationSpec>;
export type BGPPeer = Resource<BGPPeerSpec>;
export type Node = Resource<NodeSpec>;
export type Profile = Resource<ProfileSpec>;
export type GlobalNetworkPolicy = Resource<GlobalNetworkPolicySpec>;
export type NetworkPolicy = Resource<NetworkPolicySpec>;
export type Tier = Resource<TierSpec>;
export type WorkloadEndpoint = Resource<WorkloadEndpointSpec>;
export type HostEndpoint = Resource<HostEndpointSpec>;
export type GlobalNetworkSet = Resource<GlobalNetworkSetSpec>;
export type NetworkSet = Resource<NetworkSetSpec>;
export type FelixConfiguration = Resource<FelixConfigurationSpec>;
export type ClusterInformation = Resource<ClusterInformationSpec>;

/** Kind name to spec type, for code that switches on `kind`. */
export interface SpecByKind {
  IPPool: IPPoolSpec;
  BGPConfiguration: BGPConfigurationSpec;
  BGPPeer: BGPPeerSpec;
  Node: NodeSpec;
  Profile: ProfileSpec;
  GlobalNetworkPolicy: GlobalNetworkPolicySpec;
  NetworkPolicy: NetworkPolicySpec;
  Tier: TierSpec;
  WorkloadEndpoint: WorkloadEndpointSpec;
  HostEndpoint: HostEndpointSpec;
  GlobalNetworkSet: GlobalNetworkSetSpec;
  NetworkSet: NetworkSetSpec;
  FelixConfiguration: FelixConfigurationSpec;
  ClusterInformation: ClusterInformationSpec;
}
