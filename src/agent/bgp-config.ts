/**
 * What the BGP speaker of one node (or route reflector) should be, computed from the datastore's
 * BGP resources the way Calico's confd renders BIRD's configuration: our AS, router id, listen
 * port and cluster id; the node-to-node mesh; BGPPeers (global, `node`, `nodeSelector`, with a
 * `peerIP` or a `peerSelector`, and the reverse side of peerSelector peerings); route reflector
 * clients; communities for locally originated prefixes.
 *
 * PURE: resources in, a SpeakerConfig and peer list out. Never touches the speaker, the kernel or
 * the datastore. What cannot be honoured (a BGPPeer with a password, a selector that does not
 * parse) is returned in `problems` naming the resource, and that peer alone is left out.
 */
import ipaddr from 'ipaddr.js';
import type { PeerKind, SpeakerConfig, SpeakerPeerConfig } from '../bgp/speaker-api.ts';
import type { BGPConfiguration, BGPConfigurationSpec, BGPPeer, Node } from '../model/types.ts';
import { parseDuration } from '../config/resolve.ts';
import { parseSelector } from '../policy/selector.ts';
import { errorMessage } from '../errors.ts';

export const DEFAULT_ASN = 64512;
export const DEFAULT_BGP_PORT = 179;

export interface BgpResources {
  readonly nodes: readonly Node[];
  readonly bgpPeers: readonly BGPPeer[];
  readonly bgpConfigs: readonly BGPConfiguration[];
}

export interface BgpOptions {
  /** Listen port from a flag/env/file: wins over BGPConfiguration listenPort for our own listener. */
  readonly listenPort?: number;
  /** Cluster id from the reflector's --cluster-id (the Node's routeReflectorClusterID wins if set). */
  readonly clusterId?: string;
  /** We restarted with forwarding state kept (SpeakerConfig.restarting). */
  readonly restarting?: boolean;
  /** Graceful restart time we announce (default 120 s). */
  readonly restartTimeSec?: number;
}

export interface BgpProblem {
  readonly key: string;
  readonly reason: string;
}

/** Communities for the locally originated routes inside `cidr` (BGPConfiguration prefixAdvertisements). */
export interface PrefixCommunities {
  readonly cidr: string;
  readonly communities: readonly number[];
  readonly largeCommunities: ReadonlyArray<readonly [number, number, number]>;
}

export interface BgpComputation {
  /** Undefined: this node runs no speaker (`reason` says why). */
  readonly config: SpeakerConfig | undefined;
  readonly reason?: string;
  readonly peers: SpeakerPeerConfig[];
  readonly problems: BgpProblem[];
  readonly prefixCommunities: PrefixCommunities[];
  /**
   * Service address ranges every node advertises (BGPConfiguration serviceClusterIPs,
   * serviceExternalIPs, serviceLoadBalancerIPs), canonical and sorted.
   */
  readonly serviceRoutes: string[];
}

/** BGPConfiguration `default` merged with `node.<name>` (the more specific wins, field by field). */
export function mergedBgpConfig(configs: readonly BGPConfiguration[], nodeName: string): BGPConfigurationSpec {
  const byName = new Map(configs.map((c) => [c.metadata.name, c.spec ?? {}]));
  const out: Record<string, unknown> = { ...(byName.get('default') ?? {}) };
  for (const [k, v] of Object.entries(byName.get(`node.${nodeName}`) ?? {})) if (v !== undefined) out[k] = v;
  return out as BGPConfigurationSpec;
}

/** The address part of a Node's CIDR-form BGP address ("10.0.0.1/24" -> "10.0.0.1"). */
export function bareAddress(cidr: string | undefined): string | undefined {
  if (!cidr) return undefined;
  const slash = cidr.indexOf('/');
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

/** Parses a BGPPeer peerIP: "ip", "ip:port", "[v6]:port" or a bare IPv6 address. */
export function parsePeerIP(text: string): { address: string; port?: number } {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) return { address: normalizeIp(bracket[1]!), ...(bracket[2] ? { port: Number(bracket[2]) } : {}) };
  const v4port = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text);
  if (v4port) return { address: normalizeIp(v4port[1]!), port: Number(v4port[2]) };
  return { address: normalizeIp(text) };
}

function normalizeIp(text: string): string {
  const a = ipaddr.parse(text);
  return a.kind() === 'ipv6' ? (a as ipaddr.IPv6).toRFC5952String() : a.toString();
}

function familyOf(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

/** `<address>` or `<address>:<port>` when the port is not 179 (IPv6 bracketed then). */
export function peerId(address: string, port: number): string {
  if (port === DEFAULT_BGP_PORT) return address;
  return familyOf(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** "aa:nn" -> 32-bit standard community; "aa:nn:mm" -> large community. */
export function parseCommunity(value: string): { standard: number } | { large: [number, number, number] } {
  const parts = value.split(':').map(Number);
  if (parts.length === 2) return { standard: ((parts[0]! << 16) | parts[1]!) >>> 0 };
  return { large: [parts[0]!, parts[1]!, parts[2]!] };
}

function seconds(duration: string | undefined): number | undefined {
  if (!duration) return undefined;
  return Math.round(parseDuration(duration) / 1000);
}

/** A router id from an IPv6 address when the node has no IPv4 one (its low 32 bits). */
function routerIdFromV6(v6: string): string {
  const b = ipaddr.IPv6.parse(v6).toByteArray();
  return b.slice(12, 16).join('.');
}

interface NodeInfo {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly ipv4?: string;
  readonly ipv6?: string;
  readonly asn: number;
  readonly clusterId?: string;
  readonly port: number;
}

/** Precedence when one address is configured twice: explicit peers win over the mesh. */
const KIND_RANK: Record<PeerKind, number> = { 'node-specific': 0, 'rr-client': 1, reflector: 1, global: 2, mesh: 3 };

/**
 * @param nodeName the Node resource this speaker belongs to
 * @returns the speaker configuration (undefined when the Node has no BGP address), its peers
 *   sorted by id, and the problems found
 */
export function computeBgp(nodeName: string, resources: BgpResources, opts: BgpOptions = {}): BgpComputation {
  const problems: BgpProblem[] = [];
  const global = mergedBgpConfig(resources.bgpConfigs, 'default');
  const globalAsn = global.asNumber ?? DEFAULT_ASN;
  const info = (n: Node): NodeInfo => {
    const bgp = n.spec?.bgp;
    const cfg = mergedBgpConfig(resources.bgpConfigs, n.metadata.name);
    return {
      name: n.metadata.name,
      labels: n.metadata.labels ?? {},
      ipv4: bareAddress(bgp?.ipv4Address),
      ipv6: bareAddress(bgp?.ipv6Address) ? normalizeIp(bareAddress(bgp?.ipv6Address)!) : undefined,
      asn: bgp?.asNumber ?? globalAsn,
      clusterId: bgp?.routeReflectorClusterID,
      port: cfg.listenPort ?? DEFAULT_BGP_PORT,
    };
  };
  const nodes = [...resources.nodes].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0)).map(info);
  const me = nodes.find((n) => n.name === nodeName);
  const empty = (reason: string): BgpComputation => ({ config: undefined, reason, peers: [], problems, prefixCommunities: [], serviceRoutes: [] });
  if (!me) return empty(`no Node resource named '${nodeName}'`);
  if (!me.ipv4 && !me.ipv6) return empty(`Node '${nodeName}' has no BGP address (spec.bgp.ipv4Address / ipv6Address)`);

  const mine = mergedBgpConfig(resources.bgpConfigs, nodeName);
  const clusterId = me.clusterId ?? opts.clusterId;
  const config: SpeakerConfig = {
    asn: me.asn,
    routerId: me.ipv4 ?? routerIdFromV6(me.ipv6!),
    ...(clusterId ? { clusterId } : {}),
    listen: { addresses: [me.ipv4, me.ipv6].filter((a): a is string => !!a), port: opts.listenPort ?? mine.listenPort ?? DEFAULT_BGP_PORT },
    nextHop: { ...(me.ipv4 ? { ipv4: me.ipv4 } : {}), ...(me.ipv6 ? { ipv6: me.ipv6 } : {}) },
    restartTimeSec: opts.restartTimeSec ?? 120,
    ...(opts.restarting ? { restarting: true } : {}),
  };

  // Communities: names from spec.communities or literal values, per advertised CIDR.
  const named = new Map((mine.communities ?? []).map((c) => [c.name, c.value]));
  const prefixCommunities: PrefixCommunities[] = (mine.prefixAdvertisements ?? []).map((pa) => {
    const communities: number[] = [];
    const largeCommunities: Array<[number, number, number]> = [];
    for (const c of pa.communities) {
      const parsed = parseCommunity(named.get(c) ?? c);
      if ('standard' in parsed) communities.push(parsed.standard);
      else largeCommunities.push(parsed.large);
    }
    return { cidr: pa.cidr, communities, largeCommunities };
  });

  // The speaker takes one community set for every local route: what covers everything (a /0).
  const everywhere = prefixCommunities.filter((pc) => pc.cidr.endsWith('/0'));
  const localCommunities = [...new Set(everywhere.flatMap((pc) => pc.communities))];
  const localLarge = everywhere.flatMap((pc) => pc.largeCommunities);
  const speakerConfig: SpeakerConfig = {
    ...config,
    ...(localCommunities.length > 0 ? { localCommunities } : {}),
    ...(localLarge.length > 0 ? { localLargeCommunities: localLarge } : {}),
  };

  const ownAddresses = new Set([me.ipv4, me.ipv6].filter(Boolean));
  const byAddress = new Map<string, NodeInfo>();
  for (const n of nodes) {
    if (n.ipv4) byAddress.set(n.ipv4, n);
    if (n.ipv6) byAddress.set(n.ipv6, n);
  }
  const candidates: SpeakerPeerConfig[] = [];
  const localFor = (address: string): string | undefined => (familyOf(address) === 4 ? me.ipv4 : me.ipv6);

  // The node-to-node mesh: every other Node with a BGP address of the same family. BIRD-run Calico
  // makes the node whose address sorts lower (as a string) passive, so exactly one side connects.
  const meshOn = global.nodeToNodeMeshEnabled ?? true;
  if (meshOn && global.nodeMeshPassword) {
    problems.push({ key: 'BGPConfiguration/default', reason: "nodeMeshPassword: TCP MD5 cannot be set on a socket by Node.js; the node-to-node mesh is not started" });
  } else if (meshOn) {
    const maxRestart = seconds(global.nodeMeshMaxRestartTime);
    for (const n of nodes) {
      if (n.name === me.name) continue;
      for (const [mine4or6, theirs] of [
        [me.ipv4, n.ipv4],
        [me.ipv6, n.ipv6],
      ] as const) {
        if (!mine4or6 || !theirs || ownAddresses.has(theirs)) continue;
        candidates.push({
          id: peerId(theirs, n.port),
          address: theirs,
          ...(n.port !== DEFAULT_BGP_PORT ? { port: n.port } : {}),
          asn: n.asn,
          kind: 'mesh',
          ...(theirs > mine4or6 ? { passive: true } : {}),
          localAddress: mine4or6,
          ...(maxRestart !== undefined ? { maxRestartTimeSec: maxRestart } : {}),
          source: `Node/${n.name}`,
        });
      }
    }
  }

  // BGPPeers, in name order so that the result does not depend on the order they arrived in.
  const appliesTo = (p: BGPPeer, n: NodeInfo): boolean => {
    const s = p.spec ?? {};
    if (s.node !== undefined) return s.node === n.name;
    if (s.nodeSelector !== undefined) return parseSelector(s.nodeSelector).evaluate(n.labels);
    return true;
  };
  const peers = [...resources.bgpPeers].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  for (const p of peers) {
    const key = `BGPPeer/${p.metadata.name}`;
    const s = p.spec ?? {};
    try {
      const forward = appliesTo(p, me);
      const reverse = s.peerSelector !== undefined && s.reversePeering !== 'Manual' && parseSelector(s.peerSelector).evaluate(me.labels);
      if (!forward && !reverse) continue;
      if (s.password) {
        problems.push({ key, reason: `BGPPeer '${p.metadata.name}' has a password: TCP MD5 cannot be set on a socket by Node.js; this peer is not configured` });
        continue;
      }
      const baseKind: PeerKind = s.node === undefined && s.nodeSelector === undefined ? 'global' : 'node-specific';
      const maxRestart = seconds(s.maxRestartTime);
      // BIRD's keepalive time; the hold time we offer is three of them, as RFC 4271 suggests.
      const keepalive = seconds(s.keepaliveTime);
      const keepNextHop = s.keepOriginalNextHop === true || s.nextHopMode === 'Keep';
      const add = (address: string, port: number, asn: number, peerCluster: string | undefined, kind: PeerKind): void => {
        if (ownAddresses.has(address)) return; // never peer with ourselves
        const local = localFor(address);
        if (!local) return; // no address of that family to speak from
        const client = clusterId !== undefined && peerCluster !== clusterId;
        const k: PeerKind = client ? 'rr-client' : peerCluster !== undefined ? 'reflector' : kind;
        candidates.push({
          id: peerId(address, port),
          address,
          ...(port !== DEFAULT_BGP_PORT ? { port } : {}),
          asn,
          kind: k,
          ...(s.sourceAddress === 'None' ? {} : { localAddress: local }),
          ...(client ? { routeReflectorClient: true } : {}),
          ...(keepNextHop ? { keepOriginalNextHop: true } : {}),
          ...(maxRestart !== undefined ? { maxRestartTimeSec: maxRestart } : {}),
          ...(keepalive !== undefined && keepalive > 0 ? { holdTimeSec: Math.max(3, keepalive * 3) } : {}),
          source: key,
        });
      };
      if (forward && s.peerIP !== undefined) {
        const { address, port } = parsePeerIP(s.peerIP);
        add(address, port ?? DEFAULT_BGP_PORT, s.asNumber ?? globalAsn, byAddress.get(address)?.clusterId, baseKind);
      }
      if (forward && s.peerSelector !== undefined) {
        const sel = parseSelector(s.peerSelector);
        for (const n of nodes) {
          if (n.name === me.name || !sel.evaluate(n.labels)) continue;
          for (const a of [n.ipv4, n.ipv6]) if (a) add(a, n.port, n.asn, n.clusterId, baseKind);
        }
      }
      // The other side of a peerSelector peering: the nodes this BGPPeer applies to peer with us,
      // so we peer with them (Calico's reversePeering Auto).
      if (reverse) {
        for (const n of nodes) {
          if (n.name === me.name || !appliesTo(p, n)) continue;
          for (const a of [n.ipv4, n.ipv6]) if (a) add(a, n.port, n.asn, n.clusterId, baseKind);
        }
      }
    } catch (err) {
      problems.push({ key, reason: `BGPPeer '${p.metadata.name}': ${errorMessage(err)}; this peer is not configured` });
    }
  }

  // One session per address and port: explicit configuration wins over the mesh, then the first
  // BGPPeer by name.
  const chosen = new Map<string, SpeakerPeerConfig>();
  for (const c of candidates) {
    const cur = chosen.get(c.id);
    if (!cur || KIND_RANK[c.kind] < KIND_RANK[cur.kind]) chosen.set(c.id, c);
  }
  const out = [...chosen.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  // Service ranges, as Calico advertises them from every node (kube-proxy delivers the traffic).
  const serviceRoutes = new Set<string>();
  for (const field of ['serviceClusterIPs', 'serviceExternalIPs', 'serviceLoadBalancerIPs'] as const) {
    for (const block of mine[field] ?? []) {
      try {
        const [addr, len] = ipaddr.parseCIDR(block.cidr);
        serviceRoutes.add(`${networkOf(addr, len)}/${len}`);
      } catch (err) {
        problems.push({ key: 'BGPConfiguration', reason: `${field} ${block.cidr}: ${errorMessage(err)}; not advertised` });
      }
    }
  }
  return { config: speakerConfig, peers: out, problems, prefixCommunities, serviceRoutes: [...serviceRoutes].sort() };
}

/** The communities for one locally originated prefix: those of every advertisement containing it. */
export function communitiesFor(prefix: string, list: readonly PrefixCommunities[]): { communities: number[]; largeCommunities: Array<[number, number, number]> } {
  const communities: number[] = [];
  const largeCommunities: Array<[number, number, number]> = [];
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.parseCIDR(prefix)[0];
  } catch {
    return { communities, largeCommunities };
  }
  for (const pc of list) {
    try {
      const range = ipaddr.parseCIDR(pc.cidr);
      if (range[0].kind() !== addr.kind() || !addr.match(range)) continue;
    } catch {
      continue;
    }
    for (const c of pc.communities) if (!communities.includes(c)) communities.push(c);
    for (const l of pc.largeCommunities) largeCommunities.push([l[0], l[1], l[2]]);
  }
  return { communities, largeCommunities };
}

/** The network address of addr/len, as text. */
function networkOf(addr: ipaddr.IPv4 | ipaddr.IPv6, len: number): string {
  const bytes = addr.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, len - i * 8));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes).toString();
}
