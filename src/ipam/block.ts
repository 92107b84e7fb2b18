/**
 * One allocation block's bookkeeping, as libcalico-go's ipam_block.go: a new empty block, taking
 * free ordinals from the front of `unallocated`, releasing to its end (so a just-freed address is
 * reused last), attribute sharing and clean-up, and the consistency check the tests and
 * `ctl ipam check` rely on. Pure: every function returns a new BlockDoc and never touches etcd.
 */
import { addrToOrdinal, cidrSize, formatAddr, ordinalToAddr, parseCidr, parseAddr, type Cidr } from './block-math.ts';
import type { AllocationAttribute, BlockDoc } from './keys.ts';

export function newBlock(cidr: Cidr, affinity: string | null, strictAffinity = false): BlockDoc {
  const size = Number(cidrSize(cidr));
  const text = `${formatAddr(cidr.version, cidr.base)}/${cidr.prefix}`;
  return {
    cidr: text,
    affinity,
    strictAffinity,
    allocations: new Array<number | null>(size).fill(null),
    unallocated: Array.from({ length: size }, (_, i) => i),
    attributes: [],
    deleted: false,
    sequenceNumber: 0,
  };
}

export function blockCidr(b: BlockDoc): Cidr {
  return parseCidr(b.cidr, true);
}

export function freeCount(b: BlockDoc): number {
  return b.unallocated.length;
}

export function allocatedCount(b: BlockDoc): number {
  return b.allocations.length - b.unallocated.length;
}

function sameAttribute(a: AllocationAttribute, handleId: string | null, secondary: Record<string, string> | null): boolean {
  if (a.handle_id !== handleId) return false;
  const x = a.secondary ?? {};
  const y = secondary ?? {};
  const kx = Object.keys(x);
  if (kx.length !== Object.keys(y).length) return false;
  return kx.every((k) => x[k] === y[k]);
}

/**
 * Takes up to `n` free addresses from the front of `unallocated` for one handle; the allocations
 * share one attribute entry (an equal existing one is reused). Returns the new block and the
 * addresses taken (fewer than `n` when the block runs out).
 */
export function assignFromBlock(b: BlockDoc, n: number, handleId: string | null, secondary: Record<string, string> | null): { block: BlockDoc; addrs: bigint[]; ordinals: number[] } {
  const take = Math.min(n, b.unallocated.length);
  if (take <= 0) return { block: b, addrs: [], ordinals: [] };
  const cidr = blockCidr(b);
  const attributes = b.attributes.slice();
  let attrIndex = attributes.findIndex((a) => sameAttribute(a, handleId, secondary));
  if (attrIndex < 0) {
    attributes.push({ handle_id: handleId, secondary: secondary && Object.keys(secondary).length > 0 ? { ...secondary } : null });
    attrIndex = attributes.length - 1;
  }
  const ordinals = b.unallocated.slice(0, take);
  const allocations = b.allocations.slice();
  for (const o of ordinals) allocations[o] = attrIndex;
  return {
    block: { ...b, allocations, unallocated: b.unallocated.slice(take), attributes, sequenceNumber: b.sequenceNumber + 1 },
    addrs: ordinals.map((o) => ordinalToAddr(cidr, o)),
    ordinals,
  };
}

/**
 * Drops attribute entries no allocation points at and renumbers the allocations (Calico's
 * deleteUnusedAttributes), so released handles leave no trace in the block.
 */
function compactAttributes(allocations: Array<number | null>, attributes: AllocationAttribute[]): { allocations: Array<number | null>; attributes: AllocationAttribute[] } {
  const used = new Set<number>();
  for (const a of allocations) if (a !== null) used.add(a);
  if (used.size === attributes.length) return { allocations, attributes };
  const remap = new Map<number, number>();
  const kept: AllocationAttribute[] = [];
  attributes.forEach((attr, i) => {
    if (used.has(i)) {
      remap.set(i, kept.length);
      kept.push(attr);
    }
  });
  return { allocations: allocations.map((a) => (a === null ? null : remap.get(a)!)), attributes: kept };
}

function releaseOrdinals(b: BlockDoc, ordinals: readonly number[]): BlockDoc {
  if (ordinals.length === 0) return b;
  const allocations = b.allocations.slice();
  for (const o of ordinals) allocations[o] = null;
  const compact = compactAttributes(allocations, b.attributes);
  return { ...b, ...compact, unallocated: [...b.unallocated, ...ordinals], sequenceNumber: b.sequenceNumber + 1 };
}

export interface Released {
  readonly block: BlockDoc;
  /** Released addresses with the handle each was under. */
  readonly released: ReadonlyArray<{ addr: bigint; handleId: string | null }>;
}

/** Releases every allocation of a handle in this block. */
export function releaseHandleFromBlock(b: BlockDoc, handleId: string): Released {
  const cidr = blockCidr(b);
  const ordinals: number[] = [];
  b.allocations.forEach((a, o) => {
    if (a !== null && b.attributes[a]?.handle_id === handleId) ordinals.push(o);
  });
  return { block: releaseOrdinals(b, ordinals), released: ordinals.map((o) => ({ addr: ordinalToAddr(cidr, o), handleId })) };
}

/** Releases the given addresses of this block that are allocated (others are ignored). */
export function releaseAddrsFromBlock(b: BlockDoc, addrs: readonly bigint[]): Released {
  const cidr = blockCidr(b);
  const ordinals: number[] = [];
  const released: Array<{ addr: bigint; handleId: string | null }> = [];
  for (const addr of addrs) {
    const o = addrToOrdinal(cidr, cidr.version, addr);
    if (o === undefined || ordinals.includes(o)) continue;
    const a = b.allocations[o];
    if (a === null || a === undefined) continue;
    ordinals.push(o);
    released.push({ addr, handleId: b.attributes[a]?.handle_id ?? null });
  }
  return { block: releaseOrdinals(b, ordinals), released };
}

export interface BlockAllocation {
  readonly ip: string;
  readonly ordinal: number;
  readonly handleId: string | null;
  readonly attributes: Record<string, string>;
}

/** Every allocated address of a block, in ordinal order. */
export function blockAllocations(b: BlockDoc): BlockAllocation[] {
  const cidr = blockCidr(b);
  const out: BlockAllocation[] = [];
  b.allocations.forEach((a, o) => {
    if (a === null) return;
    const attr = b.attributes[a];
    out.push({ ip: formatAddr(cidr.version, ordinalToAddr(cidr, o)), ordinal: o, handleId: attr?.handle_id ?? null, attributes: { ...(attr?.secondary ?? {}) } });
  });
  return out;
}

/** The allocation of one address in this block, or undefined when it is free or outside. */
export function allocationOf(b: BlockDoc, ip: string): BlockAllocation | undefined {
  const cidr = blockCidr(b);
  const p = parseAddr(ip);
  if (!p) return undefined;
  const o = addrToOrdinal(cidr, p.version, p.value);
  if (o === undefined) return undefined;
  const a = b.allocations[o];
  if (a === null || a === undefined) return undefined;
  const attr = b.attributes[a];
  return { ip: formatAddr(cidr.version, p.value), ordinal: o, handleId: attr?.handle_id ?? null, attributes: { ...(attr?.secondary ?? {}) } };
}

/**
 * What is wrong with a block, as sentences (empty when consistent): every ordinal is either
 * allocated or listed once in `unallocated`, never both; allocations point at existing attributes;
 * no attribute is unused; the array has the block's size.
 */
export function blockProblems(b: BlockDoc): string[] {
  const problems: string[] = [];
  let cidr: Cidr;
  try {
    cidr = blockCidr(b);
  } catch (err) {
    return [`block cidr '${b.cidr}' is invalid: ${err instanceof Error ? err.message : String(err)}`];
  }
  const size = Number(cidrSize(cidr));
  if (b.allocations.length !== size) problems.push(`block ${b.cidr}: ${b.allocations.length} allocation slots, expected ${size}`);
  const free = new Set<number>();
  for (const o of b.unallocated) {
    if (o >= size) problems.push(`block ${b.cidr}: unallocated ordinal ${o} is outside the block`);
    if (free.has(o)) problems.push(`block ${b.cidr}: ordinal ${o} listed twice as unallocated`);
    free.add(o);
  }
  const used = new Set<number>();
  b.allocations.forEach((a, o) => {
    if (a === null) {
      if (!free.has(o)) problems.push(`block ${b.cidr}: ordinal ${o} is neither allocated nor unallocated`);
      return;
    }
    if (free.has(o)) problems.push(`block ${b.cidr}: ordinal ${o} is allocated and also listed as unallocated`);
    if (a >= b.attributes.length) problems.push(`block ${b.cidr}: ordinal ${o} points at attribute ${a}, which does not exist`);
    used.add(a);
  });
  b.attributes.forEach((_, i) => {
    if (!used.has(i)) problems.push(`block ${b.cidr}: attribute ${i} is not used by any allocation`);
  });
  return problems;
}

/** Per handle, how many addresses this block holds for it. */
export function handleCounts(b: BlockDoc): Map<string, number> {
  const out = new Map<string, number>();
  for (const a of b.allocations) {
    if (a === null) continue;
    const h = b.attributes[a]?.handle_id;
    if (h) out.set(h, (out.get(h) ?? 0) + 1);
  }
  return out;
}
