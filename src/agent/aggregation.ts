/**
 * Route aggregation, as Calico's node does it: a host advertises each IPAM block it holds a
 * confirmed affinity for as one prefix, and only the workload addresses outside those blocks
 * (borrowed from another host's block) as /32 or /128. Pending and pendingDeletion blocks are
 * not advertised (their workloads' host routes are). Also the bookkeeping of the host's own
 * affinity keys (`/calico/ipam/v2/host/<host>/ipv4|ipv6/block/<cidr>`) as a syncer delivers them.
 *
 * Owns: which prefixes a host originates and which blocks it blackholes. Pure: never touches the
 * kernel, the datastore or the speaker.
 */
import ipaddr from 'ipaddr.js';
import type { SyncUpdate } from '../datastore/syncer.ts';
import { decodeAffinity, parseAffinityKey, type AffinityState } from '../ipam/keys.ts';

/** A parsed CIDR: the network and its prefix length (host bits cleared). */
type Net = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Canonical CIDR text (host bits cleared; IPv6 RFC 5952); undefined when not a CIDR. */
export function canonicalPrefix(text: string): string | undefined {
  try {
    const [addr, len] = ipaddr.parseCIDR(text);
    const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
    const s = net.kind() === 'ipv6' ? (net as ipaddr.IPv6).toRFC5952String() : net.toString();
    return `${s}/${len}`;
  } catch {
    return undefined;
  }
}

function parseNet(text: string): Net | undefined {
  try {
    return ipaddr.parseCIDR(text) as Net;
  } catch {
    return undefined;
  }
}

function inside(addr: Net, block: Net): boolean {
  if (addr[0].kind() !== block[0].kind() || addr[1] < block[1]) return false;
  return (addr[0] as ipaddr.IPv4).match(block as [ipaddr.IPv4, number]);
}

/**
 * The prefixes a host advertises: every confirmed affine block (canonical), plus each workload
 * address (a /32 or /128 CIDR) not inside one of them. Sorted, deduplicated. Unparseable entries
 * are dropped.
 */
export function aggregateRoutes(confirmedBlocks: Iterable<string>, workloadAddresses: Iterable<string>): string[] {
  const out = new Set<string>();
  const blocks: Net[] = [];
  for (const b of confirmedBlocks) {
    const canon = canonicalPrefix(b);
    const net = canon === undefined ? undefined : parseNet(canon);
    if (!canon || !net) continue;
    out.add(canon);
    blocks.push(net);
  }
  for (const w of workloadAddresses) {
    const canon = canonicalPrefix(w);
    const net = canon === undefined ? undefined : parseNet(canon);
    if (!canon || !net) continue;
    if (!blocks.some((b) => inside(net, b))) out.add(canon);
  }
  return [...out].sort();
}

/** One host's block affinities as the syncer reports them: canonical block CIDR -> state. */
export class AffinityTable {
  readonly #host: string;
  /** affinity key -> [canonical cidr, state] */
  readonly #byKey = new Map<string, readonly [string, AffinityState]>();

  constructor(host: string) {
    this.#host = host;
  }

  /**
   * Applies syncer updates; keys of other hosts and undecodable values are ignored (a bad value
   * removes the key's entry and is returned as a problem). Returns whether the confirmed set changed.
   */
  apply(updates: readonly SyncUpdate[]): { changed: boolean; problems: string[] } {
    const before = this.confirmed().join(',');
    const problems: string[] = [];
    for (const u of updates) {
      const p = parseAffinityKey(u.key);
      if (!p || p.host !== this.#host) continue;
      if (u.value === null) {
        this.#byKey.delete(u.key);
        continue;
      }
      const cidr = canonicalPrefix(p.cidr);
      try {
        if (cidr === undefined) throw new Error(`invalid block CIDR '${p.cidr}'`);
        const doc = decodeAffinity(u.key, u.value);
        if (doc.deleted) this.#byKey.delete(u.key);
        else this.#byKey.set(u.key, [cidr, doc.state]);
      } catch (err) {
        this.#byKey.delete(u.key);
        problems.push(`${u.key}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return { changed: this.confirmed().join(',') !== before, problems };
  }

  /** The confirmed affine blocks, canonical and sorted. */
  confirmed(): string[] {
    const out = new Set<string>();
    for (const [cidr, state] of this.#byKey.values()) if (state === 'confirmed') out.add(cidr);
    return [...out].sort();
  }
}
