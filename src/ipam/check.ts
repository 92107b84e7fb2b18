/**
 * Auditing block IPAM: the internal consistency of blocks and handles, and the cross-check of
 * allocations against WorkloadEndpoints (`ctl ipam check`). Pure: takes decoded objects, returns
 * findings; never reads or repairs the datastore.
 */
import type { Allocation } from './api.ts';
import { parseAddr, formatAddr } from './block-math.ts';
import { blockProblems, handleCounts } from './block.ts';
import type { BlockDoc, HandleDoc } from './keys.ts';

/**
 * Every inconsistency between blocks and handles: a block's own bookkeeping (blockProblems), and
 * for every handle, its per-block counts equal the allocations the blocks hold for it.
 */
export function consistencyProblems(blocks: readonly BlockDoc[], handles: readonly HandleDoc[]): string[] {
  const problems: string[] = [];
  const actual = new Map<string, Map<string, number>>();
  for (const b of blocks) {
    problems.push(...blockProblems(b));
    for (const [h, n] of handleCounts(b)) {
      const m = actual.get(h) ?? new Map<string, number>();
      m.set(b.cidr, n);
      actual.set(h, m);
    }
  }
  const seen = new Set<string>();
  for (const h of handles) {
    seen.add(h.handleID);
    const real = actual.get(h.handleID) ?? new Map<string, number>();
    for (const [cidr, n] of Object.entries(h.block)) {
      if ((real.get(cidr) ?? 0) !== n) problems.push(`handle ${h.handleID}: records ${n} address(es) in block ${cidr}, the block holds ${real.get(cidr) ?? 0}`);
    }
    for (const [cidr, n] of real) {
      if (h.block[cidr] === undefined) problems.push(`handle ${h.handleID}: block ${cidr} holds ${n} of its address(es) but the handle does not record it`);
    }
    if (Object.keys(h.block).length === 0) problems.push(`handle ${h.handleID}: records no blocks (should have been deleted)`);
  }
  for (const [h, m] of actual) {
    if (!seen.has(h)) problems.push(`handle ${h}: holds ${[...m.values()].reduce((a, b) => a + b, 0)} address(es) in block(s) ${[...m.keys()].join(', ')} but has no handle object`);
  }
  return problems;
}

/** What `ctl ipam check` needs to know about one WorkloadEndpoint. */
export interface EndpointIps {
  /** `<namespace>/<name>` */
  readonly name: string;
  readonly node?: string;
  /** Bare addresses (masks stripped, canonical spelling). */
  readonly ips: readonly string[];
}

export interface LeakReport {
  /** Allocations no endpoint (and no node tunnel address) uses. */
  readonly leaked: readonly Allocation[];
  /** Endpoint addresses that IPAM has not allocated. */
  readonly unallocated: ReadonlyArray<{ endpoint: string; ip: string }>;
  readonly allocationsChecked: number;
  readonly endpointsChecked: number;
}

/** The canonical bare spelling of `1.2.3.4`, `1.2.3.4/32`, `fd00::0:4/128`; undefined when not an address. */
export function canonicalIp(text: string): string | undefined {
  const p = parseAddr(text.split('/')[0] ?? '');
  return p ? formatAddr(p.version, p.value) : undefined;
}

/**
 * Allocations without a WorkloadEndpoint listing their address are leaks (unless the address is
 * a node's tunnel address, given in `infrastructureIps`); endpoint addresses IPAM has not handed
 * out are the opposite problem.
 */
export function findLeaks(allocations: readonly Allocation[], endpoints: readonly EndpointIps[], infrastructureIps: readonly string[] = []): LeakReport {
  const used = new Set<string>();
  for (const e of endpoints) for (const ip of e.ips) used.add(ip);
  for (const ip of infrastructureIps) used.add(ip);
  const allocated = new Set(allocations.map((a) => a.ip));
  const leaked = allocations.filter((a) => !used.has(a.ip));
  const unallocated: Array<{ endpoint: string; ip: string }> = [];
  for (const e of endpoints) for (const ip of e.ips) if (!allocated.has(ip)) unallocated.push({ endpoint: e.name, ip });
  return { leaked, unallocated, allocationsChecked: allocations.length, endpointsChecked: endpoints.length };
}

/** A WorkloadEndpoint resource's JSON -> EndpointIps (namespace/name from the key when the JSON lacks them). */
export function endpointIps(keyNamespace: string, keyName: string, text: string): EndpointIps {
  let r: { metadata?: { name?: string; namespace?: string }; spec?: { node?: string; ipNetworks?: unknown } } = {};
  try {
    r = JSON.parse(text) as typeof r;
  } catch {
    // unreadable: no addresses
  }
  const nets = Array.isArray(r.spec?.ipNetworks) ? (r.spec!.ipNetworks as unknown[]) : [];
  const ips = nets.flatMap((n) => {
    const c = typeof n === 'string' ? canonicalIp(n) : undefined;
    return c ? [c] : [];
  });
  return { name: `${r.metadata?.namespace ?? keyNamespace}/${r.metadata?.name ?? keyName}`, ...(r.spec?.node ? { node: r.spec.node } : {}), ips };
}

/** A Node resource's tunnel addresses (IPIP, VXLAN, WireGuard), which IPAM allocates too. */
export function nodeTunnelIps(text: string): string[] {
  let r: { spec?: Record<string, unknown> } = {};
  try {
    r = JSON.parse(text) as typeof r;
  } catch {
    return [];
  }
  const s = r.spec ?? {};
  const bgp = (s.bgp ?? {}) as Record<string, unknown>;
  const wg = (s.wireguard ?? {}) as Record<string, unknown>;
  return [s.ipv4VXLANTunnelAddr, s.ipv6VXLANTunnelAddr, bgp.ipv4IPIPTunnelAddr, wg.interfaceIPv4Address, wg.interfaceIPv6Address].flatMap((v) => {
    const c = typeof v === 'string' ? canonicalIp(v) : undefined;
    return c ? [c] : [];
  });
}
