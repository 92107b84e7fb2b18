/**
 * Block IPAM on etcd, in Calico's design and key layout (/calico/ipam/v2/): IPPools are cut into
 * blocks; a host claims blocks (affinity pending -> block created -> affinity confirmed) and
 * assigns from its own blocks first, then a newly claimed one, then borrows a free address from any
 * block of a matching pool unless IPAMConfig.strictAffinity forbids it. Handles record which
 * blocks hold a handle's addresses, so release-by-handle visits only those.
 *
 * Every write is one etcd transaction guarded by the mod revisions of every key it changes (a block
 * and its handles together, so they never disagree, even after a crash); a lost race re-reads and
 * retries with jittered backoff, at most `maxAttempts` times. Inside one process, work on a block is
 * group-committed (block-writer.ts) and concurrent block claims of one host are shared; across
 * processes and hosts the compare-and-swap alone keeps every address unique.
 *
 * Address lists this module returns (AssignResult, releaseByHandle, releaseIps, ipsByHandle) are
 * full-length CIDRs (`10.65.1.4/32`, `fd00::4/128`); Allocation.ip is the bare address. Inputs
 * accept either spelling.
 *
 * Owns the IPAM keys only; never writes IPPools, Nodes or WorkloadEndpoints.
 */
import type { Etcd3 } from 'etcd3';
import type { AssignRequest, AssignResult, Allocation, BlockInfo, Ipam } from './api.ts';
import { blockOf, formatAddr, formatCidr, hostStartIndex, parseAddr, parseCidr, poolBlocks, cidrContains, type Cidr, type IpVersion } from './block-math.ts';
import { allocatedCount, allocationOf, blockAllocations, blockCidr, newBlock } from './block.ts';
import { BlockWriter, MAX_ADDRS_PER_RELEASE } from './block-writer.ts';
import { EtcdKv, RETRY } from './etcd-kv.ts';
import { IpamContentionError, IpamExhaustedError, IpamRequestError } from './errors.ts';
import {
  IPAM_CONFIG_KEY, IPAM_PREFIX, IPPOOL_PREFIX, NODE_PREFIX,
  affinityHost, affinityKey, blockKey, blockPrefix, decodeAffinity, decodeBlock, decodeHandle, decodeIpamConfig,
  encodeAffinity, encodeBlock, handleKey, hostAffinity, hostAffinityPrefix, parseAffinityKey, parseBlockKey,
  type AffinityDoc, type BlockDoc, type HandleDoc, type IpamConfigDoc,
} from './keys.ts';
import { decodePool, nodeLabels, poolOfBlock, selectPools, type Pool } from './pools.ts';

export interface IpamOptions {
  /** Compare-and-swap attempts per write before giving up (default 100, as Calico). */
  readonly maxAttempts?: number;
  /** Backoff after a lost race: random in [0, min(cap, base * 2^attempt)) ms (defaults 1 and 50). */
  readonly backoffBaseMs?: number;
  readonly backoffCapMs?: number;
}

/** A full-length CIDR for an address. */
function hostCidr(version: IpVersion, value: bigint): string {
  return `${formatAddr(version, value)}/${version === 4 ? 32 : 128}`;
}

/** Parses `1.2.3.4` or `1.2.3.4/32` (the mask must be full-length). */
function parseIpArg(text: string): { version: IpVersion; value: bigint } {
  const [a, m, ...rest] = text.trim().split('/');
  const p = parseAddr(a ?? '');
  if (!p || rest.length > 0) throw new IpamRequestError(`invalid IP address '${text}'`);
  if (m !== undefined && Number(m) !== (p.version === 4 ? 32 : 128)) throw new IpamRequestError(`invalid IP address '${text}': expected a bare address or a /${p.version === 4 ? 32 : 128}`);
  return p;
}

class EtcdIpam implements Ipam {
  readonly #kv: EtcdKv;
  readonly #writer: BlockWriter;
  /** Block claims in flight per `host version`: concurrent assigners of one host share one claim. */
  readonly #claims = new Map<string, Promise<string | undefined>>();

  constructor(client: Etcd3, opts: IpamOptions) {
    this.#kv = new EtcdKv(client, { maxAttempts: opts.maxAttempts ?? 100, backoffBaseMs: opts.backoffBaseMs ?? 1, backoffCapMs: opts.backoffCapMs ?? 50 });
    this.#writer = new BlockWriter(this.#kv);
  }

  // ---- reading configuration ------------------------------------------------------------------

  async #config(): Promise<IpamConfigDoc> {
    const kv = await this.#kv.get(IPAM_CONFIG_KEY);
    return decodeIpamConfig(IPAM_CONFIG_KEY, kv?.value ?? null);
  }

  async #pools(): Promise<Pool[]> {
    const out: Pool[] = [];
    for (const kv of await this.#kv.list(IPPOOL_PREFIX)) {
      try {
        out.push(decodePool(kv.key.slice(IPPOOL_PREFIX.length), kv.value));
      } catch {
        // A pool the validator would have rejected gives no addresses; it must not stop the others.
      }
    }
    return out;
  }

  async #readHandle(handleId: string): Promise<HandleDoc | undefined> {
    const key = handleKey(handleId);
    const kv = await this.#kv.get(key);
    return kv ? decodeHandle(key, kv.value) : undefined;
  }

  /** Assigns up to `n` addresses from one block (group-committed with other work on it). */
  async #assignFromBlock(cidr: Cidr, n: number, req: AssignRequest, affineTo?: string): Promise<bigint[]> {
    const secondary = req.attributes && Object.keys(req.attributes).length > 0 ? { ...req.attributes } : null;
    return this.#writer.submit(cidr, { kind: 'assign', n, handleId: req.handleId, secondary, ...(affineTo !== undefined ? { affineTo } : {}) });
  }

  /**
   * Claims one block for a host: affinity pending (put-if-absent), block (put-if-absent), affinity
   * confirmed. False when another host got the block first (our pending affinity is removed).
   */
  async #claimBlock(host: string, cidr: Cidr, strictAffinity: boolean): Promise<boolean> {
    const text = formatCidr(cidr);
    const aKey = affinityKey(host, cidr.version, text);
    const bKey = blockKey(cidr.version, text);
    // 1. Affinity, pending. An existing key under our host is ours (a concurrent or crashed claim).
    await this.#kv.txn([{ key: aKey, rev: null }], [{ key: aKey, value: encodeAffinity({ state: 'pending', deleted: false }) }]);
    // 2. The block itself.
    const created = await this.#kv.txn([{ key: bKey, rev: null }], [{ key: bKey, value: encodeBlock(newBlock(cidr, hostAffinity(host), strictAffinity)) }]);
    if (!created) {
      const kv = await this.#kv.get(bKey);
      if (!kv || decodeBlock(bKey, kv.value).affinity !== hostAffinity(host)) {
        await this.#kv.retry(`drop pending affinity ${aKey}`, async () => {
          const a = await this.#kv.get(aKey);
          if (!a || decodeAffinity(aKey, a.value).state !== 'pending') return undefined;
          return (await this.#kv.txn([{ key: aKey, rev: a.rev }], [{ key: aKey, value: null }])) ? undefined : RETRY;
        });
        return false;
      }
    }
    // 3. Confirm.
    await this.#confirmAffinity(aKey);
    return true;
  }

  async #confirmAffinity(aKey: string): Promise<void> {
    await this.#kv.retry(`confirm affinity ${aKey}`, async () => {
      const a = await this.#kv.get(aKey);
      const doc: AffinityDoc | undefined = a ? decodeAffinity(aKey, a.value) : undefined;
      if (doc?.state === 'confirmed') return undefined;
      const ok = await this.#kv.txn([{ key: aKey, rev: a?.rev ?? null }], [{ key: aKey, value: encodeAffinity({ state: 'confirmed', deleted: false }) }]);
      return ok ? undefined : RETRY;
    });
  }

  /**
   * The host's blocks inside the given pools, in pool order: confirmed ones, and pending ones whose
   * block exists with our affinity (a claim that crashed before confirming: confirm it now).
   */
  async #ownBlocks(host: string, version: IpVersion, pools: readonly Pool[]): Promise<Cidr[]> {
    const out: Array<{ cidr: Cidr; pool: number }> = [];
    for (const kv of await this.#kv.list(hostAffinityPrefix(host, version))) {
      const parsed = parseAffinityKey(kv.key);
      if (!parsed) continue;
      const cidr = parseCidr(parsed.cidr, false);
      const pool = pools.findIndex((p) => cidrContains(p.cidr, cidr));
      if (pool < 0) continue;
      const a = decodeAffinity(kv.key, kv.value);
      if (a.state === 'pendingDeletion') continue;
      if (a.state === 'pending') {
        const bKey = blockKey(version, parsed.cidr);
        const b = await this.#kv.get(bKey);
        if (!b || decodeBlock(bKey, b.value).affinity !== hostAffinity(host)) continue;
        await this.#confirmAffinity(kv.key);
      }
      out.push({ cidr, pool });
    }
    out.sort((a, b) => a.pool - b.pool || (a.cidr.base < b.cidr.base ? -1 : a.cidr.base > b.cidr.base ? 1 : 0));
    return out.map((o) => o.cidr);
  }

  /** Claims a new block for the host, sharing a claim already in flight for it. */
  #claimNewBlock(host: string, version: IpVersion, pools: readonly Pool[], strictAffinity: boolean): Promise<string | undefined> {
    const id = `${host} ${version}`;
    const inFlight = this.#claims.get(id);
    if (inFlight) return inFlight;
    const p = this.#findAndClaim(host, version, pools, strictAffinity).finally(() => this.#claims.delete(id));
    this.#claims.set(id, p);
    return p;
  }

  /** Claims the first free block of the pools (starting where this host starts); undefined when every block is taken. */
  async #findAndClaim(host: string, version: IpVersion, pools: readonly Pool[], strictAffinity: boolean): Promise<string | undefined> {
    const existing = new Set<string>();
    for (const kv of await this.#kv.list(blockPrefix(version), true)) {
      const p = parseBlockKey(kv.key);
      if (p) existing.add(formatCidr(parseCidr(p.cidr, false)));
    }
    for (const pool of pools) {
      for (const cidr of poolBlocks(pool.cidr, pool.blockSize, hostStartIndex(host, pool.cidr, pool.blockSize))) {
        const text = formatCidr(cidr);
        if (existing.has(text)) continue;
        if (await this.#claimBlock(host, cidr, strictAffinity)) return text;
        existing.add(text);
      }
    }
    return undefined;
  }

  /** Blocks of the pools with a free address that are not this host's, for borrowing. */
  async #borrowable(host: string, version: IpVersion, pools: readonly Pool[]): Promise<Cidr[]> {
    const out: Cidr[] = [];
    for (const kv of await this.#kv.list(blockPrefix(version))) {
      const b = decodeBlock(kv.key, kv.value);
      if (b.deleted || b.unallocated.length === 0 || b.affinity === hostAffinity(host)) continue;
      const cidr = blockCidr(b);
      if (pools.some((p) => cidrContains(p.cidr, cidr))) out.push(cidr);
    }
    return out;
  }

  async #assignVersion(version: IpVersion, n: number, req: AssignRequest, allPools: readonly Pool[], labels: Record<string, string>, config: IpamConfigDoc): Promise<bigint[]> {
    if (n === 0) return [];
    const requested = version === 4 ? req.pools4 : req.pools6;
    const pools = selectPools(allPools, version, labels, requested);
    if (pools.length === 0) {
      throw new IpamExhaustedError(`no IPv${version} addresses available for host '${req.hostname}': no enabled IPv${version} IPPool matches the host`);
    }
    const got: bigint[] = [];
    const host = req.hostname;
    try {
      for (let round = 0; got.length < n && round < this.#kv.maxAttempts; round++) {
        // 1. Our own blocks.
        const own = await this.#ownBlocks(host, version, pools);
        for (const cidr of own) {
          if (got.length >= n) break;
          got.push(...(await this.#assignFromBlock(cidr, n - got.length, req, host)));
        }
        if (got.length >= n) break;
        // 2. A new block (then round again to assign from it like any other of ours).
        const mayClaim = config.autoAllocateBlocks && (config.maxBlocksPerHost === 0 || own.length < config.maxBlocksPerHost);
        if (mayClaim && (await this.#claimNewBlock(host, version, pools, config.strictAffinity)) !== undefined) continue;
        // 3. Borrow from anybody's block, unless strict affinity forbids it.
        if (config.strictAffinity) break;
        for (const cidr of await this.#borrowable(host, version, pools)) {
          if (got.length >= n) break;
          got.push(...(await this.#assignFromBlock(cidr, n - got.length, req)));
        }
        // Our own blocks may have gained free addresses meanwhile (releases): one more look.
        if (got.length < n && round === 0) continue;
        break;
      }
    } catch (err) {
      if (got.length > 0) await this.releaseIps(got.map((v) => hostCidr(version, v)));
      throw err;
    }
    if (got.length < n) {
      if (got.length > 0) await this.releaseIps(got.map((v) => hostCidr(version, v)));
      const why = config.strictAffinity ? " (strictAffinity is on: no borrowing from other hosts' blocks)" : '';
      throw new IpamExhaustedError(
        `no addresses available: host '${host}' asked for ${n} IPv${version} address(es) from pool(s) ${pools.map((p) => `${p.name} (${p.cidrText})`).join(', ')} and got ${got.length}${why}`,
      );
    }
    return got;
  }

  // ---- the Ipam interface ---------------------------------------------------------------------

  async autoAssign(req: AssignRequest): Promise<AssignResult> {
    if (!req.handleId) throw new IpamRequestError('autoAssign: handleId is required');
    if (!req.hostname) throw new IpamRequestError('autoAssign: hostname is required');
    if (req.handleId.includes('/')) throw new IpamRequestError(`autoAssign: handleId '${req.handleId}' must not contain '/'`);
    if (req.hostname.includes('/')) throw new IpamRequestError(`autoAssign: hostname '${req.hostname}' must not contain '/'`);
    for (const [what, n] of [['num4', req.num4], ['num6', req.num6]] as const) {
      if (!Number.isInteger(n) || n < 0) throw new IpamRequestError(`autoAssign: ${what} must be a non-negative integer, got ${String(n)}`);
    }
    const [allPools, node, config] = await Promise.all([this.#pools(), this.#kv.get(`${NODE_PREFIX}${req.hostname}`), this.#config()]);
    const labels = { ...nodeLabels(node?.value ?? null) };
    const v4 = await this.#assignVersion(4, req.num4, req, allPools, labels, config);
    let v6: bigint[];
    try {
      v6 = await this.#assignVersion(6, req.num6, req, allPools, labels, config);
    } catch (err) {
      if (v4.length > 0) await this.releaseIps(v4.map((v) => hostCidr(4, v)));
      throw err;
    }
    return { ipv4: v4.map((v) => hostCidr(4, v)), ipv6: v6.map((v) => hostCidr(6, v)) };
  }

  async releaseByHandle(handleId: string): Promise<string[]> {
    const released: string[] = [];
    // A concurrent assign under the same handle may add blocks while we work: go round until gone.
    for (let round = 0; round < this.#kv.maxAttempts; round++) {
      const handle = await this.#readHandle(handleId);
      if (!handle) return released;
      const cidrs = Object.keys(handle.block).map((c) => parseCidr(c, false));
      if (cidrs.length === 0) {
        // An empty handle (Calico can leave one): remove it.
        const key = handleKey(handleId);
        const kv = await this.#kv.get(key);
        if (kv) await this.#kv.txn([{ key, rev: kv.rev }], [{ key, value: null }]);
        continue;
      }
      const out = await Promise.all(cidrs.map((c) => this.#writer.submit(c, { kind: 'releaseHandle', handleId }).then((addrs) => addrs.map((a) => hostCidr(c.version, a)))));
      released.push(...out.flat());
    }
    throw new IpamContentionError(`release handle ${handleId}: it kept gaining addresses while being released`);
  }

  async releaseIps(ips: readonly string[]): Promise<string[]> {
    const parsed = ips.map(parseIpArg);
    if (parsed.length === 0) return [];
    // Each address's block, among the stored blocks.
    const stored = new Map<IpVersion, Cidr[]>();
    for (const version of [4, 6] as const) {
      if (!parsed.some((p) => p.version === version)) continue;
      stored.set(version, (await this.#kv.list(blockPrefix(version), true)).flatMap((kv) => {
        const p = parseBlockKey(kv.key);
        return p ? [parseCidr(p.cidr, false)] : [];
      }));
    }
    const byBlock = new Map<string, { cidr: Cidr; addrs: bigint[] }>();
    for (const p of parsed) {
      const cidr = stored.get(p.version)?.find((c) => cidrContains(c, p));
      if (!cidr) continue;
      const entry = byBlock.get(formatCidr(cidr)) ?? { cidr, addrs: [] };
      if (!entry.addrs.includes(p.value)) entry.addrs.push(p.value);
      byBlock.set(formatCidr(cidr), entry);
    }
    const jobs: Array<Promise<string[]>> = [];
    for (const { cidr, addrs } of byBlock.values()) {
      for (let i = 0; i < addrs.length; i += MAX_ADDRS_PER_RELEASE) {
        const chunk = addrs.slice(i, i + MAX_ADDRS_PER_RELEASE);
        jobs.push(this.#writer.submit(cidr, { kind: 'releaseAddrs', addrs: chunk }).then((r) => r.map((a) => hostCidr(cidr.version, a))));
      }
    }
    return (await Promise.all(jobs)).flat();
  }

  async ipsByHandle(handleId: string): Promise<string[]> {
    const handle = await this.#readHandle(handleId);
    if (!handle) return [];
    const out: string[] = [];
    for (const cidr of Object.keys(handle.block)) {
      const c = parseCidr(cidr, false);
      const bKey = blockKey(c.version, formatCidr(c));
      const kv = await this.#kv.get(bKey);
      if (!kv) continue;
      for (const a of blockAllocations(decodeBlock(bKey, kv.value))) {
        if (a.handleId === handleId) out.push(`${a.ip}/${c.version === 4 ? 32 : 128}`);
      }
    }
    return out;
  }

  async #allBlocks(): Promise<Array<{ version: IpVersion; block: BlockDoc }>> {
    const out: Array<{ version: IpVersion; block: BlockDoc }> = [];
    for (const version of [4, 6] as const) {
      for (const kv of await this.#kv.list(blockPrefix(version))) out.push({ version, block: decodeBlock(kv.key, kv.value) });
    }
    return out;
  }

  async blocks(host?: string): Promise<BlockInfo[]> {
    const [all, pools, affinities] = await Promise.all([this.#allBlocks(), this.#pools(), this.#kv.list(`${IPAM_PREFIX}host/`)]);
    const states = new Map<string, AffinityDoc['state']>();
    for (const kv of affinities) {
      const p = parseAffinityKey(kv.key);
      if (p) states.set(`${p.host} ${formatCidr(parseCidr(p.cidr, false))}`, decodeAffinity(kv.key, kv.value).state);
    }
    const out: BlockInfo[] = [];
    for (const { block } of all) {
      const owner = affinityHost(block.affinity);
      if (host !== undefined && owner !== host) continue;
      const cidr = blockCidr(block);
      const state = owner !== undefined ? states.get(`${owner} ${formatCidr(cidr)}`) : undefined;
      out.push({
        cidr: block.cidr,
        ...(block.affinity ? { affinity: block.affinity } : {}),
        ...(state ? { affinityState: state } : {}),
        allocated: allocatedCount(block),
        size: block.allocations.length,
        pool: poolOfBlock(pools, cidr)?.name ?? '',
      });
    }
    return out;
  }

  async lookup(ip: string): Promise<Allocation | undefined> {
    const p = parseIpArg(ip);
    for (const kv of await this.#kv.list(blockPrefix(p.version), true)) {
      const parsed = parseBlockKey(kv.key);
      if (!parsed) continue;
      const cidr = parseCidr(parsed.cidr, false);
      if (!cidrContains(cidr, p)) continue;
      const b = await this.#kv.get(kv.key);
      if (!b) return undefined;
      const block = decodeBlock(kv.key, b.value);
      const a = allocationOf(block, formatAddr(p.version, p.value));
      return a ? { ip: a.ip, ...(a.handleId ? { handleId: a.handleId } : {}), attributes: a.attributes, block: block.cidr } : undefined;
    }
    return undefined;
  }

  async allocations(): Promise<Allocation[]> {
    const out: Allocation[] = [];
    for (const { block } of await this.#allBlocks()) {
      for (const a of blockAllocations(block)) out.push({ ip: a.ip, ...(a.handleId ? { handleId: a.handleId } : {}), attributes: a.attributes, block: block.cidr });
    }
    return out;
  }
}

/** Block IPAM over an etcd client (the caller owns and closes the client). */
export function createIpam(client: Etcd3, opts: IpamOptions = {}): Ipam {
  return new EtcdIpam(client, opts);
}

/** The block of `blockSize` an address falls in, as Calico names it (for callers that aggregate routes). */
export function blockCidrOf(ip: string, blockSize: number): string {
  const p = parseIpArg(ip);
  return formatCidr(blockOf(p.version, p.value, blockSize));
}
