/**
 * The contract between block IPAM (src/ipam/ipam.ts, Calico's design under /calico/ipam/v2/) and
 * its users: the CNI plugin (src/cni/), `routecat ctl ipam`, and the node's route aggregation.
 * Types only.
 */

export interface AssignRequest {
  /** Identifies the allocations of one container interface (CNI: `<network>.<containerId>`). */
  readonly handleId: string;
  /** The host the addresses are for (block affinity). */
  readonly hostname: string;
  /** How many IPv4 / IPv6 addresses (0 or 1 for CNI). */
  readonly num4: number;
  readonly num6: number;
  /** Restrict to these IPPools (names or CIDRs); default: every enabled pool whose nodeSelector matches the host. */
  readonly pools4?: readonly string[];
  readonly pools6?: readonly string[];
  /** Stored with each allocation (Calico: namespace, pod, node). */
  readonly attributes?: Readonly<Record<string, string>>;
}

export interface AssignResult {
  /** Addresses assigned, as CIDRs with the full-length mask: `10.65.1.4/32`, `fd00::4/128`. */
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
}

/** A block as `ctl ipam show --show-blocks` and route aggregation see it. */
export interface BlockInfo {
  readonly cidr: string;
  /** `host:<name>` or undefined when unclaimed. */
  readonly affinity?: string;
  /** The affinity's state: pending blocks are not advertised. */
  readonly affinityState?: 'pending' | 'confirmed' | 'pendingDeletion';
  readonly allocated: number;
  readonly size: number;
  readonly pool: string;
}

export interface Allocation {
  readonly ip: string;
  readonly handleId?: string;
  readonly attributes: Readonly<Record<string, string>>;
  readonly block: string;
}

export interface Ipam {
  /** Assigns addresses: own affine blocks first, then a new block, then borrowing (unless strictAffinity). */
  autoAssign(req: AssignRequest): Promise<AssignResult>;
  /** Releases everything under a handle (idempotent); returns the addresses released. */
  releaseByHandle(handleId: string): Promise<string[]>;
  /** Releases these addresses (idempotent); returns those that were allocated. */
  releaseIps(ips: readonly string[]): Promise<string[]>;
  /** The addresses held by a handle. */
  ipsByHandle(handleId: string): Promise<string[]>;
  /** Every block (for show and aggregation); `host` filters to that host's affine blocks. */
  blocks(host?: string): Promise<BlockInfo[]>;
  /** One address: its allocation, or undefined when free. */
  lookup(ip: string): Promise<Allocation | undefined>;
  /** Every allocation (for `ctl ipam check`). */
  allocations(): Promise<Allocation[]>;
}
