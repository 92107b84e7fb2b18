/**
 * Which IPPools an assignment may use: enabled pools for automatic workload assignment whose
 * nodeSelector matches the host's Node labels, or exactly the pools the request names (which
 * overrides the nodeSelector, as Calico's per-pod pool annotation does). Pure: takes the stored
 * pool and node JSON, never reads etcd itself.
 */
import { parseSelector, type Labels } from '../policy/selector.ts';
import { cidrContains, formatCidr, parseCidr, type Cidr, type IpVersion } from './block-math.ts';
import { IpamRequestError } from './errors.ts';

export interface Pool {
  readonly name: string;
  readonly cidr: Cidr;
  /** The canonical CIDR text. */
  readonly cidrText: string;
  readonly blockSize: number;
  readonly disabled: boolean;
  readonly nodeSelector: string;
  /** `assignmentMode: Manual` or no `Workload` in allowedUses: only used when asked for by name. */
  readonly manualOnly: boolean;
}

/** An IPPool resource's JSON -> Pool with Calico's defaults; a pool that makes no sense is skipped by the caller. */
export function decodePool(name: string, text: string): Pool {
  let r: { metadata?: { name?: string }; spec?: Record<string, unknown> };
  try {
    r = JSON.parse(text) as typeof r;
  } catch {
    throw new IpamRequestError(`IPPool '${name}': stored value is not JSON`);
  }
  const spec = r.spec ?? {};
  const poolName = r.metadata?.name ?? name;
  if (typeof spec.cidr !== 'string') throw new IpamRequestError(`IPPool '${poolName}': spec.cidr missing`);
  let cidr: Cidr;
  try {
    cidr = parseCidr(spec.cidr);
  } catch (err) {
    throw new IpamRequestError(`IPPool '${poolName}': ${err instanceof Error ? err.message : String(err)}`);
  }
  const width = cidr.version === 4 ? 32 : 128;
  const blockSize = typeof spec.blockSize === 'number' ? spec.blockSize : cidr.version === 4 ? 26 : 122;
  if (!Number.isInteger(blockSize) || blockSize < cidr.prefix || blockSize > width) {
    throw new IpamRequestError(`IPPool '${poolName}': blockSize ${String(spec.blockSize)} must be between the pool prefix /${cidr.prefix} and ${width}`);
  }
  if (width - blockSize > 20) throw new IpamRequestError(`IPPool '${poolName}': blockSize /${blockSize} is too large (blocks hold at most 2^20 addresses)`);
  const allowedUses = Array.isArray(spec.allowedUses) ? (spec.allowedUses as unknown[]) : ['Workload', 'Tunnel'];
  return {
    name: poolName,
    cidr,
    cidrText: formatCidr(cidr),
    blockSize,
    disabled: spec.disabled === true,
    nodeSelector: typeof spec.nodeSelector === 'string' ? spec.nodeSelector : 'all()',
    manualOnly: spec.assignmentMode === 'Manual' || !allowedUses.includes('Workload'),
  };
}

/** The labels of a Node resource's JSON; a missing or unreadable node has none. */
export function nodeLabels(text: string | null): Labels {
  if (text === null) return {};
  try {
    const r = JSON.parse(text) as { metadata?: { labels?: Record<string, string> } };
    return r.metadata?.labels ?? {};
  } catch {
    return {};
  }
}

export function poolMatchesNode(pool: Pool, labels: Labels): boolean {
  return parseSelector(pool.nodeSelector).evaluate(labels);
}

/** Does `ref` (a pool name or CIDR) name this pool? */
function refersTo(ref: string, pool: Pool): boolean {
  if (ref === pool.name) return true;
  if (!ref.includes('/')) return false;
  try {
    return formatCidr(parseCidr(ref, false)) === pool.cidrText;
  } catch {
    return false;
  }
}

/**
 * The pools of one IP version an assignment may use, in a stable order (by CIDR). With
 * `requested`, every entry must name an enabled pool of that version.
 */
export function selectPools(all: readonly Pool[], version: IpVersion, labels: Labels, requested?: readonly string[]): Pool[] {
  const ofVersion = all.filter((p) => p.cidr.version === version);
  if (requested && requested.length > 0) {
    const out: Pool[] = [];
    for (const ref of requested) {
      const pool = ofVersion.find((p) => refersTo(ref, p));
      if (!pool || pool.disabled) throw new IpamRequestError(`the requested IPv${version} pool '${ref}' does not exist or is disabled`);
      if (!out.includes(pool)) out.push(pool);
    }
    return out;
  }
  return ofVersion
    .filter((p) => !p.disabled && !p.manualOnly && poolMatchesNode(p, labels))
    .sort((a, b) => (a.cidr.base < b.cidr.base ? -1 : a.cidr.base > b.cidr.base ? 1 : a.cidr.prefix - b.cidr.prefix));
}

/** The pool holding a block (by CIDR containment), if any. */
export function poolOfBlock(pools: readonly Pool[], block: Cidr): Pool | undefined {
  return pools.find((p) => cidrContains(p.cidr, block));
}
