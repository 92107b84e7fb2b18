/**
 * The registry of Calico v3 resource kinds routecat knows: their names as users type them
 * (singular, plural, short forms), whether they are namespaced, and their etcd plural.
 * Pure data; imports nothing.
 */
export const API_VERSION = 'projectcalico.org/v3';

export interface KindInfo {
  /** The `kind` field, e.g. `GlobalNetworkPolicy`. */
  readonly kind: string;
  /** Lower-case plural used in etcd keys, e.g. `globalnetworkpolicies`. */
  readonly plural: string;
  /** Other names accepted on the command line (lower case). */
  readonly aliases: readonly string[];
  readonly namespaced: boolean;
}

export const KINDS: readonly KindInfo[] = [
  { kind: 'IPPool', plural: 'ippools', aliases: ['ippool', 'ipp', 'pool', 'pools'], namespaced: false },
  { kind: 'BGPConfiguration', plural: 'bgpconfigurations', aliases: ['bgpconfiguration', 'bgpconfig', 'bgpconfigs'], namespaced: false },
  { kind: 'BGPPeer', plural: 'bgppeers', aliases: ['bgppeer', 'bgpp', 'peer', 'peers'], namespaced: false },
  { kind: 'Node', plural: 'nodes', aliases: ['node', 'no'], namespaced: false },
  { kind: 'Profile', plural: 'profiles', aliases: ['profile', 'pro'], namespaced: false },
  { kind: 'GlobalNetworkPolicy', plural: 'globalnetworkpolicies', aliases: ['globalnetworkpolicy', 'gnp'], namespaced: false },
  { kind: 'NetworkPolicy', plural: 'networkpolicies', aliases: ['networkpolicy', 'np', 'policy', 'policies'], namespaced: true },
  { kind: 'Tier', plural: 'tiers', aliases: ['tier'], namespaced: false },
  { kind: 'WorkloadEndpoint', plural: 'workloadendpoints', aliases: ['workloadendpoint', 'wep', 'weps'], namespaced: true },
  { kind: 'HostEndpoint', plural: 'hostendpoints', aliases: ['hostendpoint', 'hep', 'heps'], namespaced: false },
  { kind: 'GlobalNetworkSet', plural: 'globalnetworksets', aliases: ['globalnetworkset', 'gns'], namespaced: false },
  { kind: 'NetworkSet', plural: 'networksets', aliases: ['networkset', 'ns', 'netset'], namespaced: true },
  { kind: 'FelixConfiguration', plural: 'felixconfigurations', aliases: ['felixconfiguration', 'felixconfig', 'felixconfigs'], namespaced: false },
  { kind: 'ClusterInformation', plural: 'clusterinformations', aliases: ['clusterinformation', 'clusterinfo'], namespaced: false },
];

const byName = new Map<string, KindInfo>();
for (const k of KINDS) {
  byName.set(k.kind.toLowerCase(), k);
  byName.set(k.plural, k);
  for (const a of k.aliases) byName.set(a, k);
}

/** Finds a kind by any accepted spelling (case-insensitive); undefined when unknown. */
export function lookupKind(name: string): KindInfo | undefined {
  return byName.get(name.toLowerCase());
}

export const DEFAULT_NAMESPACE = 'default';
