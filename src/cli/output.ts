/**
 * How `routecat ctl get` prints resources: calicoctl-style tables (`-o table`, `-o wide`) and
 * YAML/JSON that `apply` accepts back. One resource prints as itself; several as a List.
 */
import { stringify as toYaml } from 'yaml';
import { API_VERSION, type KindInfo } from '../model/kinds.ts';
import type { Resource } from '../model/resource.ts';

export const OUTPUT_FORMATS = ['table', 'wide', 'yaml', 'json'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

type Column = readonly [header: string, get: (r: Resource) => unknown];

const spec = (r: Resource): Record<string, any> => (r.spec ?? {}) as Record<string, any>;
const name: Column = ['NAME', (r) => r.metadata.name];
const namespace: Column = ['NAMESPACE', (r) => r.metadata.namespace];
const selector: Column = ['SELECTOR', (r) => spec(r).selector];
const order: Column = ['ORDER', (r) => spec(r).order];

/** [basic columns, extra columns for -o wide] per kind. */
const COLUMNS: Record<string, readonly [readonly Column[], readonly Column[]]> = {
  IPPool: [
    [name, ['CIDR', (r) => spec(r).cidr], ['SELECTOR', (r) => spec(r).nodeSelector]],
    [['NAT', (r) => spec(r).natOutgoing], ['BLOCKSIZE', (r) => spec(r).blockSize], ['IPIPMODE', (r) => spec(r).ipipMode], ['VXLANMODE', (r) => spec(r).vxlanMode], ['DISABLED', (r) => spec(r).disabled], ['DISABLEBGPEXPORT', (r) => spec(r).disableBGPExport]],
  ],
  BGPConfiguration: [
    [name, ['LOGSEVERITY', (r) => spec(r).logSeverityScreen], ['MESHENABLED', (r) => spec(r).nodeToNodeMeshEnabled], ['ASNUMBER', (r) => spec(r).asNumber]],
    [['LISTENPORT', (r) => spec(r).listenPort]],
  ],
  BGPPeer: [
    [name, ['PEERIP', (r) => spec(r).peerIP], ['NODE', (r) => spec(r).node ?? spec(r).nodeSelector ?? '(global)'], ['ASN', (r) => spec(r).asNumber]],
    [['PEERSELECTOR', (r) => spec(r).peerSelector], ['KEEPORIGINALNEXTHOP', (r) => spec(r).keepOriginalNextHop]],
  ],
  Node: [
    [name],
    [['ASN', (r) => spec(r).bgp?.asNumber ?? '(64512)'], ['IPV4', (r) => spec(r).bgp?.ipv4Address], ['IPV6', (r) => spec(r).bgp?.ipv6Address], ['RRCLUSTERID', (r) => spec(r).bgp?.routeReflectorClusterID]],
  ],
  Profile: [[name], [['LABELS', (r) => labelText(spec(r).labelsToApply)]]],
  GlobalNetworkPolicy: [[name, ['TIER', (r) => spec(r).tier]], [order, selector]],
  NetworkPolicy: [[namespace, name, ['TIER', (r) => spec(r).tier]], [order, selector]],
  Tier: [[name, order], [['DEFAULTACTION', (r) => spec(r).defaultAction]]],
  WorkloadEndpoint: [
    [namespace, ['WORKLOAD', (r) => spec(r).workload], ['NODE', (r) => spec(r).node], ['NETWORKS', (r) => (spec(r).ipNetworks ?? []).join(',')], ['INTERFACE', (r) => spec(r).interfaceName]],
    [name, ['PROFILES', (r) => (spec(r).profiles ?? []).join(',')], ['MAC', (r) => spec(r).mac]],
  ],
  HostEndpoint: [
    [name, ['NODE', (r) => spec(r).node]],
    [['INTERFACE', (r) => spec(r).interfaceName], ['IPS', (r) => (spec(r).expectedIPs ?? []).join(',')], ['PROFILES', (r) => (spec(r).profiles ?? []).join(',')]],
  ],
  GlobalNetworkSet: [[name], [['NETS', (r) => (spec(r).nets ?? []).join(',')]]],
  NetworkSet: [[namespace, name], [['NETS', (r) => (spec(r).nets ?? []).join(',')]]],
  FelixConfiguration: [[name], []],
  ClusterInformation: [[name], [['CLUSTERTYPE', (r) => spec(r).clusterType], ['READY', (r) => spec(r).datastoreReady]]],
};

function labelText(labels: unknown): string {
  if (!labels || typeof labels !== 'object') return '';
  return Object.entries(labels as Record<string, string>).map(([k, v]) => `${k}=${v}`).join(',');
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return '';
  return String(v);
}

export function formatTable(kind: KindInfo, resources: readonly Resource[], wide: boolean): string {
  const [basic, extra] = COLUMNS[kind.kind] ?? [[name], []];
  const cols = wide ? [...basic, ...extra] : basic;
  const rows = [cols.map((c) => c[0]), ...resources.map((r) => cols.map((c) => cell(c[1](r))))];
  const widths = cols.map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]))).join('   ').trimEnd()).join('\n');
}

/** Field order as users expect to read it: apiVersion, kind, metadata, spec, status. */
function ordered(r: Resource): Resource {
  const out: Resource = { apiVersion: r.apiVersion, kind: r.kind, metadata: r.metadata };
  if (r.spec !== undefined) out.spec = r.spec;
  if (r.status !== undefined) out.status = r.status;
  return out;
}

export function asList(kind: KindInfo, resources: readonly Resource[], revision?: string): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: `${kind.kind}List`,
    items: resources.map(ordered),
    metadata: revision ? { resourceVersion: revision } : {},
  };
}

export function formatResources(
  kind: KindInfo,
  resources: readonly Resource[],
  format: OutputFormat,
  single: boolean,
  revision?: string,
): string {
  if (format === 'table' || format === 'wide') return formatTable(kind, resources, format === 'wide');
  const value = single && resources.length === 1 ? ordered(resources[0]) : asList(kind, resources, revision);
  return format === 'json' ? JSON.stringify(value, null, 2) : toYaml(value, { lineWidth: 0 }).trimEnd();
}
