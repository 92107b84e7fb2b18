/**
 * Calico's IPAM key layout under /calico/ipam/v2/ and the JSON stored there (libcalico-go
 * model.AllocationBlock, BlockAffinity, IPAMHandle, IPAMConfig). Pure: strings in, typed objects
 * out, and back; a stored object that does not parse is an IpamCorruptError naming the key.
 */
import { blockName, blockCidrFromName, type IpVersion } from './block-math.ts';
import { IpamCorruptError } from './errors.ts';

export const IPAM_PREFIX = '/calico/ipam/v2/';
export const IPAM_CONFIG_KEY = `${IPAM_PREFIX}config`;
export const HANDLE_PREFIX = `${IPAM_PREFIX}handle/`;
export const IPPOOL_PREFIX = '/calico/resources/v3/projectcalico.org/ippools/';
export const NODE_PREFIX = '/calico/resources/v3/projectcalico.org/nodes/';
export const WORKLOAD_ENDPOINT_PREFIX = '/calico/resources/v3/projectcalico.org/workloadendpoints/';

export function blockPrefix(version: IpVersion): string {
  return `${IPAM_PREFIX}assignment/ipv${version}/block/`;
}

/** `/calico/ipam/v2/assignment/ipv4/block/10.65.1.0-26` */
export function blockKey(version: IpVersion, cidr: string): string {
  return `${blockPrefix(version)}${blockName(cidr)}`;
}

/** The block CIDR a block key names; undefined for other keys. */
export function parseBlockKey(key: string): { version: IpVersion; cidr: string } | undefined {
  const m = /^\/calico\/ipam\/v2\/assignment\/ipv([46])\/block\/([^/]+)$/.exec(key);
  if (!m) return undefined;
  return { version: Number(m[1]) as IpVersion, cidr: blockCidrFromName(m[2]!) };
}

export function hostAffinityPrefix(host: string, version: IpVersion): string {
  return `${IPAM_PREFIX}host/${host}/ipv${version}/block/`;
}

/** `/calico/ipam/v2/host/<host>/ipv4/block/10.65.1.0-26` */
export function affinityKey(host: string, version: IpVersion, cidr: string): string {
  return `${hostAffinityPrefix(host, version)}${blockName(cidr)}`;
}

export function parseAffinityKey(key: string): { host: string; version: IpVersion; cidr: string } | undefined {
  const m = /^\/calico\/ipam\/v2\/host\/([^/]+)\/ipv([46])\/block\/([^/]+)$/.exec(key);
  if (!m) return undefined;
  return { host: m[1]!, version: Number(m[2]) as IpVersion, cidr: blockCidrFromName(m[3]!) };
}

export function handleKey(handleId: string): string {
  return `${HANDLE_PREFIX}${handleId}`;
}

// ---- stored objects ---------------------------------------------------------------------------

export interface AllocationAttribute {
  handle_id: string | null;
  secondary: Record<string, string> | null;
}

export interface BlockDoc {
  cidr: string;
  /** `host:<name>`, or null for a block nobody owns. */
  affinity: string | null;
  strictAffinity: boolean;
  /** One entry per address: index into `attributes`, or null when free. */
  allocations: Array<number | null>;
  /** Free ordinals; allocation takes from the front, release appends to the end. */
  unallocated: number[];
  attributes: AllocationAttribute[];
  deleted: boolean;
  sequenceNumber: number;
}

export type AffinityState = 'pending' | 'confirmed' | 'pendingDeletion';

export interface AffinityDoc {
  state: AffinityState;
  deleted: boolean;
}

export interface HandleDoc {
  handleID: string;
  /** Block CIDR -> how many of the handle's addresses it holds. */
  block: Record<string, number>;
  deleted: boolean;
}

export interface IpamConfigDoc {
  strictAffinity: boolean;
  autoAllocateBlocks: boolean;
  maxBlocksPerHost: number;
}

function parseJson(key: string, text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new IpamCorruptError(key, `not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IpamCorruptError(key, 'not a JSON object');
  return v as Record<string, unknown>;
}

function isOrdinalList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= 0);
}

export function decodeBlock(key: string, text: string): BlockDoc {
  const o = parseJson(key, text);
  if (typeof o.cidr !== 'string') throw new IpamCorruptError(key, 'field cidr: missing');
  if (!Array.isArray(o.allocations) || !o.allocations.every((a) => a === null || (Number.isInteger(a) && a >= 0))) {
    throw new IpamCorruptError(key, 'field allocations: expected an array of attribute indexes or null');
  }
  if (!isOrdinalList(o.unallocated)) throw new IpamCorruptError(key, 'field unallocated: expected an array of ordinals');
  const attributes = (Array.isArray(o.attributes) ? o.attributes : []).map((a: unknown, i: number): AllocationAttribute => {
    const r = (a ?? {}) as Record<string, unknown>;
    if (r.handle_id !== undefined && r.handle_id !== null && typeof r.handle_id !== 'string') throw new IpamCorruptError(key, `field attributes[${i}].handle_id: expected a string`);
    return { handle_id: (r.handle_id as string | undefined) ?? null, secondary: (r.secondary as Record<string, string> | undefined) ?? null };
  });
  return {
    cidr: o.cidr,
    affinity: typeof o.affinity === 'string' ? o.affinity : null,
    strictAffinity: o.strictAffinity === true,
    allocations: o.allocations as Array<number | null>,
    unallocated: o.unallocated,
    attributes,
    deleted: o.deleted === true,
    sequenceNumber: typeof o.sequenceNumber === 'number' ? o.sequenceNumber : 0,
  };
}

export function encodeBlock(b: BlockDoc): string {
  return JSON.stringify({
    cidr: b.cidr,
    affinity: b.affinity,
    strictAffinity: b.strictAffinity,
    allocations: b.allocations,
    unallocated: b.unallocated,
    attributes: b.attributes,
    deleted: b.deleted,
    sequenceNumber: b.sequenceNumber,
  });
}

const AFFINITY_STATES: readonly AffinityState[] = ['pending', 'confirmed', 'pendingDeletion'];

export function decodeAffinity(key: string, text: string): AffinityDoc {
  const o = parseJson(key, text);
  // Calico's oldest affinities were stored without a state; they mean confirmed.
  const state = o.state === undefined || o.state === '' ? 'confirmed' : o.state;
  if (!AFFINITY_STATES.includes(state as AffinityState)) throw new IpamCorruptError(key, `field state: '${String(o.state)}' is not one of ${AFFINITY_STATES.join(', ')}`);
  return { state: state as AffinityState, deleted: o.deleted === true };
}

export function encodeAffinity(a: AffinityDoc): string {
  return JSON.stringify({ state: a.state, deleted: a.deleted });
}

export function decodeHandle(key: string, text: string): HandleDoc {
  const o = parseJson(key, text);
  const block = (o.block ?? {}) as Record<string, unknown>;
  if (typeof block !== 'object' || Array.isArray(block)) throw new IpamCorruptError(key, 'field block: expected an object');
  const counts: Record<string, number> = {};
  for (const [cidr, n] of Object.entries(block)) {
    if (!Number.isInteger(n)) throw new IpamCorruptError(key, `field block.${cidr}: expected an integer`);
    counts[cidr] = n as number;
  }
  const id = typeof o.handleID === 'string' ? o.handleID : key.slice(HANDLE_PREFIX.length);
  return { handleID: id, block: counts, deleted: o.deleted === true };
}

export function encodeHandle(h: HandleDoc): string {
  return JSON.stringify({ handleID: h.handleID, block: h.block, deleted: h.deleted });
}

/** IPAMConfig; accepts routecat's camelCase and Calico's stored snake_case spellings. */
export function decodeIpamConfig(key: string, text: string | null): IpamConfigDoc {
  const defaults: IpamConfigDoc = { strictAffinity: false, autoAllocateBlocks: true, maxBlocksPerHost: 0 };
  if (text === null) return defaults;
  const o = parseJson(key, text);
  const pick = (camel: string, snake: string): unknown => (o[camel] !== undefined ? o[camel] : o[snake]);
  const strict = pick('strictAffinity', 'strict_affinity');
  const auto = pick('autoAllocateBlocks', 'auto_allocate_blocks');
  const max = pick('maxBlocksPerHost', 'max_blocks_per_host');
  return {
    strictAffinity: strict === true,
    autoAllocateBlocks: auto === undefined ? true : auto === true,
    maxBlocksPerHost: Number.isInteger(max) && (max as number) > 0 ? (max as number) : 0,
  };
}

export function encodeIpamConfig(c: Partial<IpamConfigDoc>): string {
  return JSON.stringify({ strictAffinity: c.strictAffinity ?? false, autoAllocateBlocks: c.autoAllocateBlocks ?? true, ...(c.maxBlocksPerHost ? { maxBlocksPerHost: c.maxBlocksPerHost } : {}) });
}

/** `host:<name>` */
export function hostAffinity(host: string): string {
  return `host:${host}`;
}

export function affinityHost(affinity: string | null): string | undefined {
  return affinity?.startsWith('host:') ? affinity.slice(5) : undefined;
}
