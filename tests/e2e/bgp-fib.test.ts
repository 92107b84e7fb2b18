/**
 * The BGP FIB writer on a REAL kernel, inside throwaway network namespaces (`rcfib-<pid>-...`, never
 * the machine's own): a host namespace with veths to two neighbour namespaces (connected next
 * hops). BgpFib runs inside the host namespace as a child process (this same file, started with
 * `ip netns exec` and RCFIB_CHILD=1, driven by JSON lines on stdin). 1,000 routes (v4 /32s, v6
 * /128s, ECMP pairs), withdrawals, a foreign route left alone, a recursive and a pending next hop,
 * a restart that keeps routes until syncDone(), and resync repairing drift.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { BgpFib } from '../../src/agent/kernel/fib.ts';
import type { FibChange } from '../../src/bgp/speaker-api.ts';
import { errorMessage } from '../../src/errors.ts';
import { setLogLevel } from '../../src/log.ts';
import { must, run } from '../helpers/kernel-lab.ts';

// --- child mode: BgpFib in the current namespace, one JSON request per stdin line ----------------

interface Request {
  readonly id: number;
  readonly cmd: 'start' | 'apply' | 'syncDone' | 'resync' | 'retry' | 'refresh' | 'export' | 'counters';
  readonly changes?: FibChange[];
  readonly protocols?: number[];
}

async function childMain(): Promise<void> {
  const outer = process.env.ROUTECAT_OUTER_NETNS;
  if (outer === undefined || readlinkSync('/proc/self/ns/net') === outer) {
    throw new Error('the bgp-fib child runs only inside a test namespace (ip netns exec rcfib-...)');
  }
  setLogLevel('warn');
  const fib = new BgpFib({ retryIntervalMs: 0 });
  const rl = createInterface({ input: process.stdin });
  // Requests run one at a time in arrival order (BgpFib serializes as well).
  let chain: Promise<void> = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      const req = JSON.parse(line) as Request;
      try {
        let result: unknown;
        switch (req.cmd) {
          case 'start': result = await fib.start(); break;
          case 'apply': result = await fib.apply(req.changes ?? []); break;
          case 'syncDone': result = await fib.syncDone(); break;
          case 'resync': result = await fib.resync(req.changes ?? []); break;
          case 'retry': result = await fib.retryPending(); break;
          case 'refresh': result = await fib.refreshNextHops(); break;
          case 'export': result = await fib.exportedKernelRoutes(req.protocols ?? []); break;
          case 'counters': result = fib.counters(); break;
        }
        process.stdout.write(JSON.stringify({ id: req.id, ok: true, result }) + '\n');
      } catch (err) {
        process.stdout.write(JSON.stringify({ id: req.id, ok: false, error: errorMessage(err) }) + '\n');
      }
    });
  });
  rl.on('close', () => {
    void chain.then(() => fib.close());
  });
}

// --- test mode -----------------------------------------------------------------------------------

const NS_PREFIX = `rcfib-${process.pid}-`;
const namespaces: string[] = [];
const children = new Set<ChildProcess>();

async function netns(name: string): Promise<string> {
  const ns = `${NS_PREFIX}${name}`;
  await must('ip', ['netns', 'add', ns]);
  namespaces.push(ns);
  await must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
  await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  return ns;
}

function ip(ns: string, ...args: string[]): Promise<string> {
  return must('ip', ['-n', ns, ...args], { timeoutMs: 30_000 });
}

function cleanupSync(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  for (const ns of namespaces.splice(0).reverse()) {
    try {
      const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5_000 });
      for (const pid of pids.split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // ignore
    }
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5_000 });
    } catch {
      // ignore
    }
  }
}

class FibChild {
  readonly proc: ChildProcess;
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  readonly #waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #next = 0;

  constructor(ns: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', 'tests/e2e/bgp-fib.test.ts'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, RCFIB_CHILD: '1', ROUTECAT_OUTER_NETNS: readlinkSync('/proc/self/ns/net') },
    });
    children.add(this.proc);
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const m = JSON.parse(l) as { id: number; ok: boolean; result?: unknown; error?: string };
      const w = this.#waiting.get(m.id);
      this.#waiting.delete(m.id);
      if (m.ok) w?.resolve(m.result);
      else w?.reject(new Error(m.error));
    });
    createInterface({ input: this.proc.stderr! }).on('line', (l) => this.stderr.push(l));
    this.exited = new Promise((resolve) =>
      this.proc.on('exit', (code) => {
        children.delete(this.proc);
        for (const w of this.#waiting.values()) w.reject(new Error(`fib child exited (${code}): ${this.stderr.slice(-5).join('\n')}`));
        resolve(code);
      }),
    );
  }

  call<T = Record<string, number>>(cmd: Request['cmd'], extra: Partial<Request> = {}, timeoutMs = 30_000): Promise<T> {
    const id = ++this.#next;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`fib child: no answer to ${cmd} within ${timeoutMs} ms; stderr: ${this.stderr.slice(-5).join('\n')}`));
      }, timeoutMs);
      this.#waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.stdin!.write(JSON.stringify({ id, cmd, ...extra }) + '\n');
    });
  }

  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.stdin!.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

interface IpRoute {
  dst: string;
  gateway?: string;
  nexthops?: { gateway?: string }[];
}

/** Proto-193 routes of `ns` as prefix -> sorted gateways joined by ','. */
async function ours(ns: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const fam of ['-4', '-6'] as const) {
    const rs = JSON.parse((await ip(ns, fam, '-j', 'route', 'show', 'proto', '193')) || '[]') as IpRoute[];
    for (const r of rs) {
      const dst = r.dst.includes('/') ? r.dst : `${r.dst}/${fam === '-4' ? 32 : 128}`;
      const gws = r.gateway ? [r.gateway] : (r.nexthops ?? []).flatMap((n) => (n.gateway ? [n.gateway] : []));
      out.set(dst, gws.sort().join(','));
    }
  }
  return out;
}

/** BGP next hops that resolve recursively -> the gateway the kernel route uses (set by the tests). */
const recursiveVia = new Map<string, string>();

/** The kernel routes the changes should give: prefix -> sorted kernel gateways. */
function expected(changes: readonly FibChange[]): Map<string, string> {
  const via = (nh: string) => recursiveVia.get(nh) ?? nh;
  return new Map(changes.filter((c) => c.nextHops.length > 0).map((c) => [c.prefix, [...new Set(c.nextHops.map(via))].sort().join(',')]));
}

function assertSameRoutes(actual: Map<string, string>, want: Map<string, string>): void {
  const missing = [...want].filter(([p, h]) => actual.get(p) !== h).slice(0, 5);
  const extra = [...actual.keys()].filter((p) => !want.has(p)).slice(0, 5);
  assert.deepEqual({ missing, extra, size: actual.size }, { missing: [], extra: [], size: want.size });
}

const NH1 = '10.0.1.2';
const NH2 = '10.0.2.2';
const NH1_6 = 'fd00:1::2';
const NH2_6 = 'fd00:2::2';

/** 1,000 routes: 900 v4 /32s (20 of them ECMP), 100 v6 /128s (10 of them ECMP). */
function thousandRoutes(): FibChange[] {
  const out: FibChange[] = [];
  for (let i = 0; i < 900; i++) {
    const nextHops = i < 20 ? [NH1, NH2] : [i % 2 === 0 ? NH1 : NH2];
    out.push({ prefix: `10.100.${i >> 8}.${i & 255}/32`, family: 4, nextHops });
  }
  for (let i = 0; i < 100; i++) {
    const nextHops = i < 10 ? [NH1_6, NH2_6] : [i % 2 === 0 ? NH1_6 : NH2_6];
    out.push({ prefix: `fd00:100::${(i + 1).toString(16)}/128`, family: 6, nextHops });
  }
  return out;
}

function chunks<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

if (process.env.RCFIB_CHILD === '1') {
  childMain().catch((err) => {
    process.stderr.write(`bgp-fib child: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  });
} else {
  process.once('exit', cleanupSync);

  describe('BgpFib on a real kernel', { timeout: 180_000 }, () => {
    let host: string;
    let fib: FibChild;
    /** What the speaker has sent so far (prefix -> change), for resync. */
    const rib = new Map<string, FibChange>();
    const send = async (child: FibChild, changes: FibChange[]) => {
      for (const c of changes) {
        if (c.nextHops.length === 0) rib.delete(c.prefix);
        else rib.set(c.prefix, c);
      }
      return child.call('apply', { changes });
    };

    before(async () => {
      host = await netns('host');
      for (const n of [1, 2]) {
        const nb = await netns(`nb${n}`);
        await ip(host, 'link', 'add', `h${n}`, 'type', 'veth', 'peer', 'name', `n${n}`, 'netns', nb);
        await ip(host, 'addr', 'add', `10.0.${n}.1/24`, 'dev', `h${n}`);
        await ip(host, '-6', 'addr', 'add', `fd00:${n}::1/64`, 'dev', `h${n}`, 'nodad');
        await ip(host, 'link', 'set', `h${n}`, 'up');
        await ip(nb, 'addr', 'add', `10.0.${n}.2/24`, 'dev', `n${n}`);
        await ip(nb, '-6', 'addr', 'add', `fd00:${n}::2/64`, 'dev', `n${n}`, 'nodad');
        await ip(nb, 'link', 'set', `n${n}`, 'up');
      }
      // Routes of other protocols: a foreign route on a prefix BGP will also learn, and an IGP-ish
      // route through which a BGP next hop resolves recursively.
      await ip(host, 'route', 'add', '10.100.3.200/32', 'via', NH2, 'proto', 'static');
      await ip(host, 'route', 'add', '10.50.0.0/16', 'via', NH2, 'proto', 'static');
      await ip(host, '-6', 'route', 'add', 'fd00:50::/48', 'via', NH1_6, 'proto', 'static');
      fib = new FibChild(host);
      // Foreign prefixes: 2 connected + 2 static v4; 2 connected + fe80::/64 + 1 static v6.
      assert.deepEqual(await fib.call('start'), { stale: 0, foreign: 8 });
    });

    after(async () => {
      await fib?.stop();
      cleanupSync();
      const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(NS_PREFIX));
      assert.deepEqual(left, [], 'no namespaces of ours are left');
    });

    test('1,000 routes (v4, v6, ECMP) through a few apply calls', async () => {
      const all = thousandRoutes();
      let added = 0;
      for (const part of chunks(all, 250)) {
        const r = await send(fib, part);
        assert.equal(r.failed, 0, JSON.stringify(r));
        added += r.added;
      }
      assert.equal(added, 1000);
      assertSameRoutes(await ours(host), expected(all));
      const v4 = JSON.parse(await ip(host, '-4', '-j', 'route', 'show', 'proto', '193')) as IpRoute[];
      const v6 = JSON.parse(await ip(host, '-6', '-j', 'route', 'show', 'proto', '193')) as IpRoute[];
      assert.equal(v4.length, 900);
      assert.equal(v6.length, 100);
      assert.equal(v4.filter((r) => r.nexthops?.length === 2).length, 20, 'v4 ECMP');
      assert.equal(v6.filter((r) => r.nexthops?.length === 2).length, 10, 'v6 ECMP');
      // The same again changes nothing.
      const again = await send(fib, all.slice(0, 300));
      assert.deepEqual([again.commands, again.unchanged], [0, 300]);
    });

    test('withdrawals delete, next-hop changes replace', async () => {
      const all = thousandRoutes();
      const withdraw = [...all.slice(100, 150), ...all.slice(950, 960)].map((c) => ({ ...c, nextHops: [] }));
      const change = all.slice(200, 210).map((c) => ({ ...c, nextHops: [NH1, NH2] }));
      const r = await send(fib, [...withdraw, ...change]);
      assert.deepEqual([r.deleted, r.replaced, r.failed], [60, 10, 0]);
      assertSameRoutes(await ours(host), expected([...rib.values()]));
    });

    test('a foreign route on the same prefix is left untouched and counted', async () => {
      const r = await send(fib, [{ prefix: '10.100.3.200/32', family: 4, nextHops: [NH1] }]);
      assert.deepEqual([r.skippedForeign, r.commands], [1, 0]);
      const shown = JSON.parse(await ip(host, '-j', 'route', 'show', '10.100.3.200/32')) as (IpRoute & { protocol: string })[];
      assert.deepEqual(shown.map((x) => [x.protocol, x.gateway]), [['static', NH2]]);
      rib.delete('10.100.3.200/32');
      const w = await fib.call('apply', { changes: [{ prefix: '10.100.3.200/32', family: 4, nextHops: [] }] });
      assert.equal(w.deleted, 0);
      assert.equal((JSON.parse(await ip(host, '-j', 'route', 'show', '10.100.3.200/32')) as unknown[]).length, 1, 'still there');
      assert.ok((await fib.call('counters')).skippedForeign >= 1);
    });

    test('recursive next hop resolves through the route to it; an unresolvable one waits', async () => {
      const r = await send(fib, [
        { prefix: '10.150.0.0/24', family: 4, nextHops: ['10.50.0.1'] },
        { prefix: 'fd00:150::/64', family: 6, nextHops: ['fd00:50::1'] },
        { prefix: '10.160.0.0/24', family: 4, nextHops: ['10.77.0.1'] },
      ]);
      assert.deepEqual([r.added, r.unresolved, r.failed], [2, 1, 0]);
      const now = await ours(host);
      assert.equal(now.get('10.150.0.0/24'), NH2);
      assert.equal(now.get('fd00:150::/64'), NH1_6);
      assert.equal(now.has('10.160.0.0/24'), false);
      assert.equal((await fib.call('counters')).unresolved, 1);
      // The next hop becomes reachable; the retry (periodic, or on a route change) installs it.
      await ip(host, 'route', 'add', '10.77.0.0/16', 'via', NH1, 'proto', 'static');
      const retry = await fib.call('retry');
      assert.equal(retry.added, 1);
      assert.equal((await ours(host)).get('10.160.0.0/24'), NH1);
      // The route to a recursive next hop moves: refreshNextHops rewrites only what depends on it.
      await ip(host, 'route', 'replace', '10.50.0.0/16', 'via', NH1, 'proto', 'static');
      const ref = await fib.call('refresh');
      assert.deepEqual([ref.commands, ref.replaced], [1, 1]);
      assert.equal((await ours(host)).get('10.150.0.0/24'), NH1);
      recursiveVia.set('10.50.0.1', NH1).set('fd00:50::1', NH1_6).set('10.77.0.1', NH1);
      for (const c of ['10.150.0.0/24', '10.160.0.0/24']) rib.set(c, { prefix: c, family: 4, nextHops: c === '10.150.0.0/24' ? ['10.50.0.1'] : ['10.77.0.1'] });
      rib.set('fd00:150::/64', { prefix: 'fd00:150::/64', family: 6, nextHops: ['fd00:50::1'] });
    });

    test('exportedKernelRoutes lists the static routes (v4 and v6)', async () => {
      const r = await fib.call<string[]>('export', { protocols: [4] });
      assert.deepEqual(r, ['10.100.3.200/32', '10.50.0.0/16', '10.77.0.0/16', 'fd00:50::/48']);
    });

    test('a restarted BgpFib keeps the routes until syncDone() removes the unconfirmed ones', async () => {
      await fib.stop();
      const before = await ours(host);
      assert.equal(before.size, rib.size, 'close() leaves every route in place');
      fib = new FibChild(host);
      const st = await fib.call('start');
      assert.equal(st.stale, rib.size);
      // The speaker re-learns all but 30 routes; the kernel keeps the others meanwhile.
      const all = [...rib.values()];
      const lost = all.slice(0, 30);
      for (const c of lost) rib.delete(c.prefix);
      const relearned = all.slice(30);
      for (const part of chunks(relearned, 400)) {
        const r = await fib.call('apply', { changes: part });
        assert.deepEqual([r.commands, r.failed], [0, 0], 'a confirmed route is not rewritten');
      }
      assert.equal((await ours(host)).size, all.length);
      assert.deepEqual(await fib.call('syncDone'), { removed: 30, failed: 0 });
      assertSameRoutes(await ours(host), expected([...rib.values()]));
    });

    test('resync repairs drift: hand-deleted and changed routes back, an extra proto-193 route deleted', async () => {
      const [gone, changed] = [...rib.keys()].filter((p) => !p.includes(':') && rib.get(p)!.nextHops.length === 1);
      await ip(host, 'route', 'del', gone, 'proto', '193');
      await ip(host, 'route', 'replace', changed, 'via', rib.get(changed)!.nextHops[0] === NH1 ? NH2 : NH1, 'proto', '193');
      await ip(host, 'route', 'add', '10.222.0.1/32', 'via', NH1, 'proto', '193');
      await ip(host, '-6', 'route', 'add', 'fd00:222::1/128', 'via', NH2_6, 'proto', '193');
      const r = await fib.call('resync', { changes: [...rib.values()] });
      assert.deepEqual([r.added, r.replaced, r.deleted, r.failed], [1, 1, 2, 0]);
      assert.equal(r.unchanged, rib.size - 2);
      assertSameRoutes(await ours(host), expected([...rib.values()]));
      const shown = JSON.parse(await ip(host, '-j', 'route', 'show', '10.100.3.200/32')) as (IpRoute & { protocol: string })[];
      assert.deepEqual(shown.map((x) => x.protocol), ['static'], 'the foreign route survives resync');
      assert.equal((await fib.call('resync', { changes: [...rib.values()] })).commands, 0);
    });
  });
}
