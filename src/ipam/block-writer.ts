/**
 * Every change to a block goes through here: a per-block queue that group-commits whatever piled up
 * while the previous write was in flight. One round reads the block and the handles the queued
 * operations touch, applies the operations in order to the in-memory copies, and writes block and
 * handles in ONE transaction guarded by all their mod revisions; a lost race re-reads and re-applies.
 * So a block and its handles never disagree, and 200 concurrent assigners in one process cost a few
 * etcd transactions instead of a compare-and-swap storm. Other processes and hosts are kept honest
 * by the revisions alone.
 *
 * Never chooses blocks (ipam.ts does) and never touches affinities.
 */
import { formatCidr, type Cidr } from './block-math.ts';
import { assignFromBlock, releaseAddrsFromBlock, releaseHandleFromBlock } from './block.ts';
import { RETRY, type EtcdKv, type Guard, type Kv, type Write } from './etcd-kv.ts';
import { blockKey, parseBlockKey, decodeBlock, decodeHandle, encodeBlock, encodeHandle, handleKey, hostAffinity, type BlockDoc, type HandleDoc } from './keys.ts';

export type BlockOp =
  /** Up to `n` addresses for a handle; with `affineTo`, only while the block is still that host's. */
  | { readonly kind: 'assign'; readonly n: number; readonly handleId: string; readonly secondary: Record<string, string> | null; readonly affineTo?: string }
  /** Every address of a handle in this block; the handle forgets the block. */
  | { readonly kind: 'releaseHandle'; readonly handleId: string }
  /** These addresses, when allocated. */
  | { readonly kind: 'releaseAddrs'; readonly addrs: readonly bigint[] };

/** etcd's default --max-txn-ops is 128: a block write plus at most this many handle writes. */
const MAX_HANDLES_PER_TXN = 100;
/** A releaseAddrs op may name at most this many addresses (each may belong to another handle). */
export const MAX_ADDRS_PER_RELEASE = 50;

interface Queued {
  readonly op: BlockOp;
  readonly resolve: (addrs: bigint[]) => void;
  readonly reject: (err: unknown) => void;
}

function opWeight(op: BlockOp): number {
  return op.kind === 'releaseAddrs' ? op.addrs.length : 1;
}

class HandleSet {
  readonly docs = new Map<string, { doc: HandleDoc; rev: string | null; changed: boolean }>();

  adjust(handleId: string, cidr: string, delta: number | 'drop'): void {
    const h = this.docs.get(handleId)!;
    const block = { ...h.doc.block };
    const n = delta === 'drop' ? 0 : (block[cidr] ?? 0) + delta;
    if (n > 0) block[cidr] = n;
    else delete block[cidr];
    h.doc = { ...h.doc, block };
    h.changed = true;
  }

  guards(): Guard[] {
    return [...this.docs].filter(([, h]) => h.changed).map(([id, h]) => ({ key: handleKey(id), rev: h.rev }));
  }

  writes(): Write[] {
    return [...this.docs].filter(([, h]) => h.changed).flatMap(([id, h]): Write[] => {
      if (Object.keys(h.doc.block).length > 0) return [{ key: handleKey(id), value: encodeHandle(h.doc) }];
      return h.rev === null ? [] : [{ key: handleKey(id), value: null }];
    });
  }
}

export class BlockWriter {
  readonly #kv: EtcdKv;
  readonly #queues = new Map<string, Queued[]>();

  constructor(kv: EtcdKv) {
    this.#kv = kv;
  }

  /** Queues an operation on a block; resolves with the addresses assigned or released. */
  submit(cidr: Cidr, op: BlockOp): Promise<bigint[]> {
    const key = blockKey(cidr.version, formatCidr(cidr));
    return new Promise((resolve, reject) => {
      const q = this.#queues.get(key);
      if (q) {
        q.push({ op, resolve, reject });
        return;
      }
      this.#queues.set(key, [{ op, resolve, reject }]);
      void this.#drain(key);
    });
  }

  async #drain(key: string): Promise<void> {
    const q = this.#queues.get(key)!;
    while (q.length > 0) {
      let weight = 0;
      let take = 0;
      while (take < q.length && (take === 0 || weight + opWeight(q[take]!.op) <= MAX_HANDLES_PER_TXN)) weight += opWeight(q[take++]!.op);
      const batch = q.splice(0, take);
      try {
        const results = await this.#kv.retry(`update block ${key}`, () => this.#attempt(key, batch.map((b) => b.op)));
        batch.forEach((b, i) => b.resolve(results[i]!));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.#queues.delete(key);
  }

  async #loadHandles(set: HandleSet, ids: Iterable<string>): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => !set.docs.has(id));
    const kvs = await this.#kv.getMany(missing.map(handleKey));
    this.#fillHandles(set, missing, kvs);
  }

  #fillHandles(set: HandleSet, ids: readonly string[], kvs: ReadonlyArray<Kv | undefined>): void {
    ids.forEach((id, i) => {
      const kv = kvs[i];
      set.docs.set(id, kv ? { doc: decodeHandle(handleKey(id), kv.value), rev: kv.rev, changed: false } : { doc: { handleID: id, block: {}, deleted: false }, rev: null, changed: false });
    });
  }

  /** One read-apply-write round for a batch; RETRY when a guarded key moved. */
  async #attempt(key: string, ops: readonly BlockOp[]): Promise<bigint[][] | typeof RETRY> {
    const handles = new HandleSet();
    const known = [...new Set(ops.flatMap((op) => (op.kind === 'releaseAddrs' ? [] : [op.handleId])))];
    const [kv, ...handleKvs] = await this.#kv.getMany([key, ...known.map(handleKey)]);
    this.#fillHandles(handles, known, handleKvs);
    const results: bigint[][] = [];
    if (!kv) {
      // No block: nothing to assign or release; handles that still name it forget it.
      const cidr = parseBlockKey(key)!.cidr;
      for (const op of ops) {
        if (op.kind === 'releaseHandle' && handles.docs.get(op.handleId)!.doc.block[cidr] !== undefined) handles.adjust(op.handleId, cidr, 'drop');
        results.push([]);
      }
      const guards = [{ key, rev: null }, ...handles.guards()];
      const writes = handles.writes();
      if (writes.length === 0) return results;
      return (await this.#kv.txn(guards, writes)) ? results : RETRY;
    }
    let block: BlockDoc = decodeBlock(key, kv.value);
    const before = block;
    // Release-by-address learns its handles from the block.
    const releaseHandles = ops.flatMap((op) => (op.kind === 'releaseAddrs' ? releaseAddrsFromBlock(block, op.addrs).released.flatMap((r) => (r.handleId ? [r.handleId] : [])) : []));
    await this.#loadHandles(handles, releaseHandles);
    for (const op of ops) {
      if (op.kind === 'assign') {
        if (block.deleted || (op.affineTo !== undefined && block.affinity !== hostAffinity(op.affineTo))) {
          results.push([]);
          continue;
        }
        const r = assignFromBlock(block, op.n, op.handleId, op.secondary);
        block = r.block;
        if (r.addrs.length > 0) handles.adjust(op.handleId, block.cidr, r.addrs.length);
        results.push(r.addrs);
      } else if (op.kind === 'releaseHandle') {
        const r = releaseHandleFromBlock(block, op.handleId);
        block = r.block;
        if (handles.docs.get(op.handleId)!.doc.block[block.cidr] !== undefined || r.released.length > 0) handles.adjust(op.handleId, block.cidr, 'drop');
        results.push(r.released.map((x) => x.addr));
      } else {
        const r = releaseAddrsFromBlock(block, op.addrs);
        block = r.block;
        for (const x of r.released) {
          // A handle another writer created since our read: load it in the next round.
          if (x.handleId && !handles.docs.has(x.handleId)) return RETRY;
          if (x.handleId) handles.adjust(x.handleId, block.cidr, -1);
        }
        results.push(r.released.map((x) => x.addr));
      }
    }
    const handleWrites = handles.writes();
    if (block === before && handleWrites.length === 0) return results;
    const guards: Guard[] = [{ key, rev: kv.rev }, ...handles.guards()];
    const writes: Write[] = [...(block === before ? [] : [{ key, value: encodeBlock(block) }]), ...handleWrites];
    return (await this.#kv.txn(guards, writes)) ? results : RETRY;
  }
}
