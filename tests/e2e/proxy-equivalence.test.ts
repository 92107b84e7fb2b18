/**
 * Equivalence property for `routecat proxy`: a random sequence of etcd operations applied through
 * the proxy (in front of etcd A) and directly to an independent etcd B, both started fresh, gives
 * the same answers and the same watch event streams. Operations: put (with or without a lease,
 * prev_kv), get (single key or prefix; limit, keys-only, count-only; serializable or
 * linearizable; now, at a past revision or a future one), delete (key or prefix, prev_kv), txn
 * (compare value/version/mod_revision; put/get/delete on success and failure), lease grant and
 * revoke, watch create (key or prefix, prev_kv, from now or a past revision) and cancel; keys
 * mostly under /calico/ (the proxy's cache) and some outside it (forwarded).
 *
 * Both sides get exactly the same operations in the same order, so their revisions stay equal and
 * answers compare field by field: only the header's cluster_id, member_id and raft_term are
 * ignored, and lease IDs (random per cluster) are renamed L0, L1, ... in grant order. The proxy
 * runs with a small event window so that watches from a past revision are served from the window
 * as well as forwarded. Serializable reads right after a write through the proxy must already show
 * the write (the proxy promises read-your-writes). A failing run prints the shrunk op sequence.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';
import { RawEtcd, type Answer, type RawWatchStream } from '../helpers/proxy-raw-etcd.ts';
import { startProxy, type RunningProxy } from '../../src/proxy/server.ts';
import { Upstream } from '../../src/proxy/upstream.ts';

const NUM_RUNS = Number(process.env.PROXY_EQ_RUNS ?? 30);
const MAX_OPS = 40;
/** How long a watcher may take to deliver an event that etcd has committed. */
const SETTLE_MS = 3_000;

// ---------------------------------------------------------------------------------------------
// Operations (plain data, so that fast-check prints a failing sequence readably)
// ---------------------------------------------------------------------------------------------

const KEYS = ['/calico/a', '/calico/b', '/calico/c/x', '/calico/c/y', '/calico/d', '/other/a', '/other/b'] as const;
/** Ranges as [key, prefix?]: cached prefixes, a forwarded one, and one spanning both. */
const SCOPES: ReadonlyArray<readonly [string, boolean]> = [
  ...KEYS.map((k) => [k, false] as const),
  ['/calico/', true], ['/calico/c/', true], ['/other/', true], ['/', true],
];
const VALUES = ['v0', 'v1', 'v2'] as const;

type Scope = { readonly key: string; readonly prefix: boolean };
type TxnOp = { readonly put: string; readonly value: string } | ({ readonly get: true } & Scope) | ({ readonly del: true } & Scope);
type Cmp =
  | { readonly key: string; readonly target: 'VALUE'; readonly result: CmpResult; readonly value: string }
  | { readonly key: string; readonly target: 'VERSION'; readonly result: CmpResult; readonly version: number }
  | { readonly key: string; readonly target: 'MOD'; readonly result: CmpResult; readonly back: number };
type CmpResult = 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';

/** `back`: a revision this many before the current one (clamped to the run); -1 is a future one. */
type Op =
  | { readonly op: 'put'; readonly key: string; readonly value: string; readonly lease: number | null; readonly prevKv: boolean }
  | ({ readonly op: 'get'; readonly limit: number; readonly keysOnly: boolean; readonly countOnly: boolean; readonly serializable: boolean; readonly back: number | null } & Scope)
  | ({ readonly op: 'del'; readonly prevKv: boolean } & Scope)
  | { readonly op: 'txn'; readonly cmp: Cmp; readonly success: readonly TxnOp[]; readonly failure: readonly TxnOp[] }
  | { readonly op: 'grant'; readonly ttl: number }
  | { readonly op: 'revoke'; readonly lease: number }
  | ({ readonly op: 'watch'; readonly prevKv: boolean; readonly back: number | null } & Scope)
  | { readonly op: 'cancel'; readonly watch: number };

const key = fc.constantFrom(...KEYS);
const scope = fc.constantFrom(...SCOPES).map(([k, prefix]): Scope => ({ key: k, prefix }));
const value = fc.constantFrom(...VALUES);
const cmpResult = fc.constantFrom<CmpResult>('EQUAL', 'GREATER', 'LESS', 'NOT_EQUAL');
const txnOp: fc.Arbitrary<TxnOp> = fc.oneof(
  fc.record({ put: key, value }),
  scope.map((s) => ({ get: true as const, ...s })),
  scope.map((s) => ({ del: true as const, ...s })),
);
const cmp: fc.Arbitrary<Cmp> = fc.oneof(
  fc.record({ key, target: fc.constant('VALUE' as const), result: cmpResult, value }),
  fc.record({ key, target: fc.constant('VERSION' as const), result: cmpResult, version: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ key, target: fc.constant('MOD' as const), result: cmpResult, back: fc.integer({ min: 0, max: 6 }) }),
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('put' as const), key, value, lease: fc.option(fc.nat(3), { freq: 4 }), prevKv: fc.boolean() }) },
  {
    weight: 6,
    arbitrary: fc
      .record({
        op: fc.constant('get' as const),
        s: scope,
        limit: fc.constantFrom(0, 0, 1, 2),
        keysOnly: fc.boolean(),
        countOnly: fc.constantFrom(false, false, true),
        serializable: fc.boolean(),
        back: fc.option(fc.integer({ min: -1, max: 6 }), { freq: 2 }),
      })
      .map(({ s, ...r }) => ({ ...r, ...s })),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('del' as const), s: scope, prevKv: fc.boolean() }).map(({ s, ...r }) => ({ ...r, ...s })) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('txn' as const), cmp, success: fc.array(txnOp, { maxLength: 2 }), failure: fc.array(txnOp, { maxLength: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('grant' as const), ttl: fc.integer({ min: 30, max: 300 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('revoke' as const), lease: fc.nat(3) }) },
  {
    weight: 2,
    arbitrary: fc
      .record({ op: fc.constant('watch' as const), s: scope, prevKv: fc.boolean(), back: fc.option(fc.integer({ min: 0, max: 8 }), { freq: 2 }) })
      .map(({ s, ...r }) => ({ ...r, ...s })),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('cancel' as const), watch: fc.nat(3) }) },
);

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

/** etcd's range end for every key starting with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const out = b(prefix);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]! += 1;
      return out.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * A single key has no range_end at all, as etcd's Go client sends it: etcd 3.4 reads a Range with
 * an empty but present range_end as "every key from `key` on".
 */
const rangeOf = (s: Scope): { key: Buffer; range_end?: Buffer } => (s.prefix ? { key: b(s.key), range_end: prefixEnd(s.key) } : { key: b(s.key) });

function keyInRange(k: string, s: Scope): boolean {
  return s.prefix ? k.startsWith(s.key) : k === s.key;
}

function txnRequestOp(t: TxnOp): object {
  if ('put' in t) return { request_put: { key: b(t.put), value: b(t.value) } };
  if ('get' in t) return { request_range: rangeOf(t) };
  return { request_delete_range: rangeOf(t) };
}

// ---------------------------------------------------------------------------------------------
// One side: a client, its lease IDs and its watch stream
// ---------------------------------------------------------------------------------------------

interface Side {
  readonly name: 'proxy' | 'direct';
  readonly client: RawEtcd;
  /** Lease IDs granted in this run, in grant order (named L0, L1, ... when compared). */
  leases: string[];
  stream?: RawWatchStream;
  /** Responses of `stream` already matched to a create or cancel. */
  cursor: number;
}

/** A watcher created in this run: the same on both sides (ids are compared equal). */
interface Watcher {
  readonly id: string;
  readonly scope: Scope;
  readonly prevKv: boolean;
  /** First revision it reports (its start revision, or the creation revision + 1). */
  readonly from: number;
  /** The revision when it was cancelled (its last event is at or before it). */
  until?: number;
}

/**
 * The answer as compared: Buffers as latin1 text, the header reduced to its revision (or dropped
 * when `headers` is false), lease IDs renamed by grant order (an unknown one kept as it is).
 */
function normalise(v: unknown, leases: readonly string[], headers: boolean): unknown {
  if (Buffer.isBuffer(v)) return v.toString('latin1');
  if (Array.isArray(v)) return v.map((x) => normalise(x, leases, headers));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'header') out[k] = headers && x ? { revision: (x as { revision: string }).revision } : null;
    else if ((k === 'ID' || k === 'lease') && typeof x === 'string' && leases.includes(x)) out[k] = `L${leases.indexOf(x)}`;
    else out[k] = normalise(x, leases, headers);
  }
  return out;
}


/** The flattened events a stream delivered for one watcher. */
function eventsOf(side: Side, id: string): any[] {
  return side.stream!.responses.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []);
}

const eventRev = (e: any): number => Number(e.kv.mod_revision);

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

let etcdA: EtcdServer;
let etcdB: EtcdServer;
let upstream: Upstream;
let proxy: RunningProxy;
let viaProxy: RawEtcd;
let direct: RawEtcd;

before(async () => {
  [etcdA, etcdB] = await Promise.all([startEtcd(), startEtcd()]);
  upstream = new Upstream({ endpoints: [etcdA.endpoint] });
  proxy = await startProxy({ listen: '127.0.0.1:0', cachePrefixes: ['/calico/'], upstream, windowSize: 8 });
  await proxy.synced();
  viaProxy = new RawEtcd(`127.0.0.1:${proxy.port}`);
  direct = new RawEtcd(etcdB.endpoint);
});

after(async () => {
  viaProxy?.close();
  direct?.close();
  await proxy?.stop();
  upstream?.close();
  await Promise.all([etcdA?.cleanup(), etcdB?.cleanup()]);
});

const currentRevision = async (c: RawEtcd): Promise<number> => Number((await c.must('KV', 'Range', { key: b('/') })).header.revision);

/**
 * The same start for every run on both sides: no leases, no keys, equal revisions (a run that
 * failed half-way may have left them apart; the lower side is brought up with extra writes), and
 * the proxy's cache caught up (so a run starts from a settled proxy). The last write is under
 * /calico/ so that the cache sees it as an event.
 */
async function reset(): Promise<number> {
  for (const c of [viaProxy, direct]) {
    const { leases } = await c.must('Lease', 'LeaseLeases', {});
    for (const l of leases as Array<{ ID: string }>) await c.call('Lease', 'LeaseRevoke', { ID: l.ID });
  }
  const [ra, rb] = [await currentRevision(viaProxy), await currentRevision(direct)];
  for (const c of [viaProxy, direct]) await c.must('KV', 'Put', { key: b('/calico/align'), value: b('x') });
  const lower = ra < rb ? viaProxy : direct;
  for (let i = 0; i < Math.abs(ra - rb); i++) await lower.must('KV', 'Put', { key: b('/calico/align'), value: b('x') });
  for (const c of [viaProxy, direct]) await c.must('KV', 'DeleteRange', { key: Buffer.from([0]), range_end: Buffer.from([0]) });
  const rev = await currentRevision(direct);
  assert.equal(await currentRevision(viaProxy), rev, 'both sides start at the same revision');
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await viaProxy.must('KV', 'Range', { key: b('/calico/'), range_end: prefixEnd('/calico/'), serializable: true, count_only: true });
    if (Number(r.header.revision) >= rev) return rev;
    if (Date.now() > deadline) throw new Error(`proxy cache stuck at revision ${r.header.revision}, etcd at ${rev}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

class Run {
  readonly sides: readonly [Side, Side];
  readonly watchers: Watcher[] = [];
  /** Every event of the run on the direct side, with prev_kv: the expected streams come from it. */
  readonly tracer: RawWatchStream;
  readonly start: number;
  /** Compare header revisions too (else only the bodies). */
  readonly headers: boolean;
  /** The current revision (the highest the direct side reported). */
  rev: number;

  constructor(start: number, headers: boolean) {
    this.start = start;
    this.headers = headers;
    this.rev = start;
    this.sides = [
      { name: 'proxy', client: viaProxy, leases: [], cursor: 0 },
      { name: 'direct', client: direct, leases: [], cursor: 0 },
    ];
    for (const s of this.sides) s.stream = s.client.watch();
    this.tracer = direct.watch();
    this.tracer.create({ key: Buffer.from([0]), range_end: Buffer.from([0]), start_revision: String(start + 1), prev_kv: true });
  }

  norm(v: unknown, side: Side): unknown {
    return normalise(v, side.leases, this.headers);
  }

  close(): void {
    for (const s of this.sides) s.stream?.close();
    this.tracer.close();
  }

  /** The revision `back` before the current one, not before the run; -1: one in the future. */
  past(back: number): number {
    return back < 0 ? this.rev + 1 : Math.max(this.start, this.rev - back);
  }

  private note(a: Answer, side: Side): void {
    if (side.name === 'direct' && a.ok && a.res.header) this.rev = Math.max(this.rev, Number(a.res.header.revision));
  }

  /** The same unary call on both sides; asserts identical answers. */
  async both(i: number, op: Op, service: 'KV' | 'Lease', method: string, req: (s: Side) => object): Promise<void> {
    const answers = (await Promise.all(this.sides.map((s) => s.client.call(service, method, req(s))))) as [Answer, Answer];
    this.sides.forEach((s, j) => {
      const a = answers[j]!;
      this.note(a, s);
      if (a.ok && method === 'LeaseGrant') s.leases.push(a.res.ID);
    });
    const [p, d] = answers.map((a, j) => (a.ok ? this.norm(a.res, this.sides[j]!) : { error: a.code, details: a.details }));
    assert.deepStrictEqual(p, d, `op ${i} ${JSON.stringify(op)}: ${service}.${method} answers differ (actual: proxy, expected: direct)`);
  }

  /** Lease slot n of this run on a side; a lease ID no cluster knows when none was granted. */
  private lease(side: Side, n: number): string {
    return side.leases.length === 0 ? '7' : side.leases[n % side.leases.length]!;
  }

  async step(i: number, op: Op): Promise<void> {
    switch (op.op) {
      case 'put':
        await this.both(i, op, 'KV', 'Put', (s) => ({ key: b(op.key), value: b(op.value), lease: op.lease === null ? '0' : this.lease(s, op.lease), prev_kv: op.prevKv }));
        return;
      case 'get': {
        const revision = op.back === null ? 0 : this.past(op.back);
        await this.both(i, op, 'KV', 'Range', () => ({ ...rangeOf(op), limit: op.limit, keys_only: op.keysOnly, count_only: op.countOnly, serializable: op.serializable, revision }));
        return;
      }
      case 'del':
        await this.both(i, op, 'KV', 'DeleteRange', () => ({ ...rangeOf(op), prev_kv: op.prevKv }));
        return;
      case 'txn': {
        const c = op.cmp;
        const compare = {
          key: b(c.key),
          result: c.result,
          target: c.target,
          ...(c.target === 'VALUE' ? { value: b(c.value) } : c.target === 'VERSION' ? { version: c.version } : { mod_revision: this.past(c.back) }),
        };
        await this.both(i, op, 'KV', 'Txn', () => ({ compare: [compare], success: op.success.map(txnRequestOp), failure: op.failure.map(txnRequestOp) }));
        return;
      }
      case 'grant':
        await this.both(i, op, 'Lease', 'LeaseGrant', () => ({ TTL: op.ttl }));
        return;
      case 'revoke':
        await this.both(i, op, 'Lease', 'LeaseRevoke', (s) => ({ ID: this.lease(s, op.lease) }));
        return;
      case 'watch':
        return this.watch(i, op);
      case 'cancel':
        return this.cancel(i, op);
    }
  }

  /** The next create/cancel response of a side's stream, as compared. */
  private async control(side: Side, pred: (r: any) => boolean): Promise<any> {
    const { index, res } = await side.stream!.next(side.cursor, (r) => (r.created || r.canceled) && pred(r), SETTLE_MS);
    side.cursor = index + 1;
    return res;
  }

  private async watch(i: number, op: Extract<Op, { op: 'watch' }>): Promise<void> {
    const startRevision = op.back === null ? 0 : Math.max(this.start + 1, this.past(op.back) + 1);
    const created = await Promise.all(
      this.sides.map(async (s) => {
        s.stream!.create({ ...rangeOf(op), start_revision: startRevision, prev_kv: op.prevKv });
        return this.control(s, (r) => r.created);
      }),
    );
    const [p, d] = created.map((r, j) => this.norm({ ...r, events: [] }, this.sides[j]!));
    assert.deepStrictEqual(p, d, `op ${i} ${JSON.stringify(op)}: watch create answers differ (actual: proxy, expected: direct)`);
    const direct = created[1];
    if (direct.canceled) return;
    this.watchers.push({ id: direct.watch_id, scope: op, prevKv: op.prevKv, from: startRevision || Number(direct.header.revision) + 1 });
  }

  private async cancel(i: number, op: Extract<Op, { op: 'cancel' }>): Promise<void> {
    const open = this.watchers.filter((w) => w.until === undefined);
    if (open.length === 0) return;
    const w = open[op.watch % open.length]!;
    await this.settle([w]);
    w.until = this.rev;
    const cancelled = await Promise.all(
      this.sides.map(async (s) => {
        s.stream!.cancel(w.id);
        return this.control(s, (r) => r.canceled && r.watch_id === w.id);
      }),
    );
    const [p, d] = cancelled.map((r, j) => this.norm(r, this.sides[j]!));
    assert.deepStrictEqual(p, d, `op ${i} ${JSON.stringify(op)}: watch cancel answers differ (actual: proxy, expected: direct)`);
  }

  /** The events watcher `w` must deliver up to now (or its cancellation), from the tracer. */
  expected(w: Watcher): any[] {
    const last = w.until ?? this.rev;
    return this.tracer.responses
      .flatMap((r) => r.events ?? [])
      .filter((e) => eventRev(e) >= w.from && eventRev(e) <= last && keyInRange(e.kv.key.toString('latin1'), w.scope))
      .map((e) => ({ ...e, prev_kv: w.prevKv ? e.prev_kv : null }));
  }

  /** Waits (up to SETTLE_MS) until both sides delivered every event watchers `ws` are due. */
  async settle(ws: readonly Watcher[]): Promise<void> {
    const tracerDone = () => this.rev === this.start || this.tracer.responses.some((r) => (r.events ?? []).some((e: any) => eventRev(e) >= this.rev));
    if (!(await this.tracer.until(tracerDone, SETTLE_MS))) throw new Error(`harness: the tracer watch on etcd B never reached revision ${this.rev}`);
    await Promise.all(
      this.sides.flatMap((s) => ws.map((w) => s.stream!.until(() => eventsOf(s, w.id).length >= this.expected(w).length, SETTLE_MS))),
    );
  }

  /** After the last op: every watcher's stream identical on both sides (and what etcd's history says). */
  async compareStreams(): Promise<void> {
    await this.settle(this.watchers);
    for (const w of this.watchers) {
      const [p, d] = this.sides.map((s) => this.norm(eventsOf(s, w.id), s));
      assert.deepStrictEqual(p, d, `watch ${w.id} on ${JSON.stringify(w.scope)} from revision ${w.from}: event streams differ (actual: proxy, expected: direct)`);
      assert.deepStrictEqual(d, this.norm(this.expected(w), this.sides[1]), `harness: etcd B's watch ${w.id} disagrees with its own history`);
    }
    const controls = this.sides.map((s) => this.norm(s.stream!.responses.filter((r) => !(r.events?.length > 0)), s));
    assert.deepStrictEqual(controls[0], controls[1], 'the watch streams\' create/cancel responses differ (actual: proxy, expected: direct)');
  }
}

/** Runs the property; a failure names the first differing answer and the shrunk op sequence. */
async function equivalence(t: { diagnostic(msg: string): void }, headers: boolean): Promise<void> {
  let runs = 0;
  let ops = 0;
  const started = Date.now();
  const out = await fc.check(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: MAX_OPS, size: 'max' }), async (seq) => {
      runs++;
      const run = new Run(await reset(), headers);
      try {
        for (const [i, op] of seq.entries()) {
          ops++;
          await run.step(i, op);
        }
        await run.compareStreams();
      } finally {
        run.close();
      }
    }),
    { numRuns: NUM_RUNS, interruptAfterTimeLimit: 100_000, markInterruptAsFailure: false },
  );
  t.diagnostic(`${runs} runs, ${ops} operations in ${Date.now() - started} ms`);
  if (out.failed) {
    const seq = out.counterexample?.[0] ?? [];
    const cause = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
    throw new Error(
      `${cause}\n\nshrunk op sequence (seed ${out.seed}, path ${out.counterexamplePath}, ${out.numShrinks} shrinks):\n${seq.map((op, i) => `  ${i}: ${JSON.stringify(op)}`).join('\n')}`,
    );
  }
}

test('proxy equivalence: random operations through the proxy and directly against etcd give the same answers and watch streams', { timeout: 150_000 }, async (t) => {
  await equivalence(t, false);
});

test('proxy equivalence with header revisions: a read or watch answered by the proxy reports a revision no older than the client\'s last write', {
  timeout: 150_000,
}, async (t) => {
  await equivalence(t, true);
});

test('proxy read-your-writes: a serializable get right after a put through the proxy shows the put', { timeout: 60_000 }, async () => {
  const stale: string[] = [];
  for (let i = 0; i < 200; i++) {
    const k = `/calico/ryw/${i % 7}`;
    const put = await viaProxy.must('KV', 'Put', { key: b(k), value: b(`n${i}`) });
    const got = await viaProxy.must('KV', 'Range', { key: b(k), serializable: true });
    const seen = got.kvs[0] ? `${got.kvs[0].value.toString()}@${got.kvs[0].mod_revision}` : 'nothing';
    if (got.header.revision !== put.header.revision || seen !== `n${i}@${put.header.revision}`) {
      stale.push(`put ${k}=n${i} at revision ${put.header.revision}, then got ${seen} with header revision ${got.header.revision}`);
    }
  }
  assert.deepEqual(stale, [], `${stale.length} of 200 serializable reads did not see the client's own write`);
});
