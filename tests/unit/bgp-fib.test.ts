/**
 * The BGP FIB writer without a kernel: validation of the speaker's FibChanges, next-hop
 * resolution, planning (wanted vs kernel -> the smallest set of ops), the `ip -batch` text, and
 * BgpFib itself over an in-memory FibKernel (graceful-restart stale sweep, foreign routes skipped,
 * pending next hops retried, drift repaired by resync).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { FibChange } from '../../src/bgp/speaker-api.ts';
import {
  BGP_ROUTE_PROTO,
  BgpFib,
  FibError,
  classifyWriteError,
  fastCanonicalV4,
  fibOpCommand,
  kernelHops,
  parseFibRoutes,
  planResync,
  planRoutes,
  planSweep,
  resolveNextHop,
  validateFibChange,
  type FibKernel,
  type FibKernelRoute,
  type FibTarget,
  type FibView,
} from '../../src/agent/kernel/fib.ts';
import { canonicalCidr } from '../../src/agent/kernel/kernel.ts';
import { rootLogger } from '../../src/log.ts';

rootLogger.level = -999;

function route(dst: string, protocol: number, gateways: string[] = [], extra: Partial<FibKernelRoute> = {}): FibKernelRoute {
  const family = dst.includes(':') ? 6 : 4;
  return { family, dst, protocol, metric: family === 4 ? 0 : 1024, type: 'unicast', gateways, ...extra };
}

function view(installed: Record<string, string> = {}, foreign: string[] = []): FibView {
  return { installed: new Map(Object.entries(installed)), foreign: new Set(foreign) };
}

function target(prefix: string, ...hops: string[]): FibTarget {
  return { prefix, family: prefix.includes(':') ? 6 : 4, hops };
}

describe('validateFibChange', () => {
  test('canonical prefix and next hops, deduplicated and sorted', () => {
    assert.deepEqual(validateFibChange({ prefix: '10.1.0.0/16', family: 4, nextHops: ['10.0.0.3', '10.0.0.2', '10.0.0.3'] }), {
      prefix: '10.1.0.0/16',
      family: 4,
      nextHops: ['10.0.0.2', '10.0.0.3'],
    });
    assert.deepEqual(validateFibChange({ prefix: '2001:DB8:0::/48', family: 6, nextHops: ['2001:db8:0:0::1'] }), {
      prefix: '2001:db8::/48',
      family: 6,
      nextHops: ['2001:db8::1'],
    });
    assert.deepEqual(validateFibChange({ prefix: '10.9.9.9/32', family: 4, nextHops: [] }).nextHops, []);
    assert.deepEqual(validateFibChange({ prefix: 'fd00::/64', family: 6, nextHops: ['fe80::1%eth0'] }).nextHops, ['fe80::1%eth0']);
  });

  const bad: [string, FibChange, RegExp][] = [
    ['host bits', { prefix: '10.1.0.1/16', family: 4, nextHops: ['10.0.0.2'] }, /prefix '10\.1\.0\.1\/16' has host bits set \(the network is 10\.1\.0\.0\/16\)/],
    ['no length', { prefix: '10.1.0.1', family: 4, nextHops: ['10.0.0.2'] }, /invalid prefix '10\.1\.0\.1': a CIDR with an explicit length/],
    ['length too long', { prefix: '10.1.0.0/33', family: 4, nextHops: ['10.0.0.2'] }, /invalid prefix '10\.1\.0\.0\/33'.*0\.\.32/],
    ['family mismatch', { prefix: '10.1.0.0/16', family: 6, nextHops: [] }, /prefix '10\.1\.0\.0\/16' is IPv4, but the change says family 6/],
    ['garbage prefix', { prefix: 'ten/8', family: 4, nextHops: [] }, /invalid prefix 'ten\/8'/],
    ['v6 next hop for v4', { prefix: '10.1.0.0/16', family: 4, nextHops: ['2001:db8::1'] }, /invalid next hop '2001:db8::1' of route 10\.1\.0\.0\/16: not an IPv4 address/],
    ['v4 next hop for v6', { prefix: 'fd00::/64', family: 6, nextHops: ['10.0.0.1'] }, /invalid next hop '10\.0\.0\.1' of route fd00::\/64: not an IPv6 address/],
    ['multicast next hop', { prefix: '10.1.0.0/16', family: 4, nextHops: ['224.0.0.5'] }, /multicast address/],
    ['link-local without zone', { prefix: 'fd00::/64', family: 6, nextHops: ['fe80::1'] }, /needs its interface as a zone/],
    ['injection attempt', { prefix: '10.1.0.0/16', family: 4, nextHops: ['10.0.0.2 dev lo'] }, /invalid next hop '10\.0\.0\.2 dev lo'/],
    ['bad family', { prefix: '10.1.0.0/16', family: 5 as 4, nextHops: [] }, /family must be 4 or 6, not 5/],
  ];
  for (const [name, change, re] of bad) {
    test(`rejects ${name} with a clear error`, () => {
      assert.throws(
        () => validateFibChange(change),
        (err: unknown) => err instanceof FibError && /^E_FIB_/.test(err.code) && re.test(err.message),
      );
    });
  }
});

test('fastCanonicalV4 agrees with canonicalCidr: text kept when canonical, undefined otherwise', () => {
  const octet = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('00', '01', '010', '1a', ''));
  const len = fc.oneof(fc.integer({ min: 0, max: 40 }).map(String), fc.constantFrom('08', '', '-1'));
  fc.assert(
    fc.property(fc.tuple(octet, octet, octet, octet, len), ([a, b, c, d, l]) => {
      const text = `${a}.${b}.${c}.${d}/${l}`;
      let general: string | undefined;
      try {
        general = canonicalCidr(text).cidr;
      } catch {
        general = undefined;
      }
      const fast = fastCanonicalV4(text);
      if (fast !== undefined) assert.equal(fast, general);
      else assert.ok(general !== text, `${text} is canonical but the fast path refused it`);
    }),
    { numRuns: 5_000 },
  );
  assert.equal(fastCanonicalV4('0.0.0.0/0'), '0.0.0.0/0');
  assert.equal(fastCanonicalV4('10.0.0.1/32'), '10.0.0.1/32');
  assert.equal(fastCanonicalV4('10.0.0.1/24'), undefined);
});

describe('fibOpCommand', () => {
  test('one next hop', () => {
    assert.equal(fibOpCommand({ op: 'add', prefix: '10.1.0.0/16', family: 4, hops: ['10.0.0.2'] }), 'route add 10.1.0.0/16 via 10.0.0.2 proto 193 table main');
  });
  test('several next hops make one multipath route, v4 and v6', () => {
    assert.equal(
      fibOpCommand({ op: 'replace', prefix: '10.1.0.0/16', family: 4, hops: ['10.0.0.2', '10.0.0.3'] }),
      'route replace 10.1.0.0/16 proto 193 table main nexthop via 10.0.0.2 nexthop via 10.0.0.3',
    );
    assert.equal(
      fibOpCommand({ op: 'add', prefix: 'fd00:1::/64', family: 6, hops: ['fd00::2', 'fe80::1%eth1'] }),
      'route add fd00:1::/64 proto 193 table main nexthop via fd00::2 nexthop via fe80::1 dev eth1',
    );
  });
  test('a delete always names the protocol', () => {
    assert.equal(fibOpCommand({ op: 'del', prefix: 'fd00:1::/64', family: 6 }), 'route del fd00:1::/64 proto 193 table main');
    assert.equal(fibOpCommand({ op: 'del', prefix: '10.1.0.0/16', family: 4, metric: 20 }), 'route del 10.1.0.0/16 proto 193 table main metric 20');
  });
  test('refuses non-canonical prefixes, missing or bad next hops', () => {
    assert.throws(() => fibOpCommand({ op: 'add', prefix: '10.1.0.1/16', family: 4, hops: ['10.0.0.2'] }), /non-canonical prefix '10\.1\.0\.1\/16'/);
    assert.throws(() => fibOpCommand({ op: 'add', prefix: '10.1.0.0/16', family: 4, hops: [] }), /without next hops/);
    assert.throws(() => fibOpCommand({ op: 'add', prefix: '10.1.0.0/16', family: 4, hops: ['10.0.0.2\nroute flush'] }), /invalid next hop/);
  });
});

describe('next-hop resolution', () => {
  test('connected: as is; via a gateway: recursive; none, our own or non-unicast: unresolved', () => {
    assert.deepEqual(resolveNextHop('10.0.0.2', route('10.0.0.0/24', 2)), { ok: true, hops: ['10.0.0.2'], recursive: false });
    assert.deepEqual(resolveNextHop('10.9.1.1', route('10.9.0.0/16', 3, ['10.0.0.2'])), { ok: true, hops: ['10.0.0.2'], recursive: true });
    assert.deepEqual(resolveNextHop('10.9.1.1', route('10.9.0.0/16', 4, ['10.0.0.2', '10.0.0.3'])).ok, true);
    assert.equal(resolveNextHop('10.9.1.1', undefined).ok, false);
    assert.match((resolveNextHop('10.9.1.1', route('10.9.0.0/16', BGP_ROUTE_PROTO, ['10.0.0.2'])) as { reason: string }).reason, /BGP route/);
    assert.match((resolveNextHop('10.9.1.1', route('10.9.0.0/16', 4, [], { type: 'blackhole' })) as { reason: string }).reason, /blackhole/);
    assert.deepEqual(resolveNextHop('fe80::1%eth0', undefined), { ok: true, hops: ['fe80::1%eth0'], recursive: false });
  });
  test('kernelHops merges resolved hops and lists the unresolved', () => {
    const res = new Map([
      ['10.9.1.1', resolveNextHop('10.9.1.1', route('10.9.0.0/16', 3, ['10.0.0.3']))],
      ['10.0.0.2', resolveNextHop('10.0.0.2', route('10.0.0.0/24', 2))],
      ['10.8.0.1', resolveNextHop('10.8.0.1', undefined)],
    ]);
    assert.deepEqual(kernelHops(['10.0.0.2', '10.8.0.1', '10.9.1.1'], res), { hops: ['10.0.0.2', '10.0.0.3'], unresolved: ['10.8.0.1'] });
  });
});

describe('planning', () => {
  test('single, multipath, v6, unchanged, delete, foreign skipped', () => {
    const plan = planRoutes(
      [
        target('10.1.0.0/24', '10.0.0.2'),
        target('10.2.0.0/24', '10.0.0.2', '10.0.0.3'),
        target('fd00:1::/64', 'fd00::2'),
        target('10.3.0.0/24', '10.0.0.2'),
        target('10.4.0.0/24'),
        target('10.5.0.0/24', '10.0.0.2'),
        target('10.6.0.0/24'),
      ],
      view({ '10.2.0.0/24': '10.0.0.2', '10.3.0.0/24': '10.0.0.2', '10.4.0.0/24': '10.0.0.9' }, ['10.5.0.0/24', '10.6.0.0/24']),
    );
    assert.deepEqual(plan.ops, [
      { op: 'add', prefix: '10.1.0.0/24', family: 4, hops: ['10.0.0.2'] },
      { op: 'replace', prefix: '10.2.0.0/24', family: 4, hops: ['10.0.0.2', '10.0.0.3'] },
      { op: 'add', prefix: 'fd00:1::/64', family: 6, hops: ['fd00::2'] },
      { op: 'del', prefix: '10.4.0.0/24', family: 4 },
    ]);
    assert.deepEqual(plan.foreign, ['10.5.0.0/24']);
    assert.equal(plan.unchanged, 2); // 10.3 as it is; 10.6: nothing of ours to delete (the foreign route stays)
  });

  test('stale sweep deletes only stale routes still ours and not wanted', () => {
    const v = view({ '10.1.0.0/24': 'a', '10.2.0.0/24': 'a', 'fd00::/64': 'b' });
    const ops = planSweep(['10.1.0.0/24', '10.2.0.0/24', '10.7.0.0/24', 'fd00::/64'], v, new Set(['10.2.0.0/24']));
    assert.deepEqual(ops, [
      { op: 'del', prefix: '10.1.0.0/24', family: 4 },
      { op: 'del', prefix: 'fd00::/64', family: 6 },
    ]);
  });

  test('resync fixes only differences: missing back, changed replaced, extra deleted, kept stale stays', () => {
    const wanted = new Map(
      [target('10.1.0.0/24', '10.0.0.2'), target('10.2.0.0/24', '10.0.0.2'), target('10.3.0.0/24', '10.0.0.2', '10.0.0.3')].map((t) => [t.prefix, t]),
    );
    const v = view({ '10.2.0.0/24': '10.0.0.2', '10.3.0.0/24': '10.0.0.3', '10.8.0.0/24': '10.0.0.2', '10.9.0.0/24': '10.0.0.2' });
    const plan = planResync(wanted, v, new Set(['10.9.0.0/24']));
    assert.deepEqual(plan.ops, [
      { op: 'add', prefix: '10.1.0.0/24', family: 4, hops: ['10.0.0.2'] },
      { op: 'replace', prefix: '10.3.0.0/24', family: 4, hops: ['10.0.0.2', '10.0.0.3'] },
      { op: 'del', prefix: '10.8.0.0/24', family: 4 },
    ]);
    assert.equal(plan.unchanged, 1);
    assert.deepEqual(planResync(wanted, view({ '10.1.0.0/24': '10.0.0.2', '10.2.0.0/24': '10.0.0.2', '10.3.0.0/24': '10.0.0.2,10.0.0.3' })).ops, []);
  });

  test('write errors are classified', () => {
    assert.equal(classifyWriteError('RTNETLINK answers: File exists'), 'exists');
    assert.equal(classifyWriteError('RTNETLINK answers: No such process'), 'gone');
    assert.equal(classifyWriteError('Error: Nexthop has invalid gateway.'), 'unreachable');
    assert.equal(classifyWriteError('RTNETLINK answers: Operation not permitted'), 'other');
  });
});

describe('parseFibRoutes (ip -json -N route show)', () => {
  test('connected, multipath, protocol omitted (boot), v6 link-local gateway', () => {
    const v4 = JSON.stringify([
      { dst: '10.0.0.0/24', dev: 'veth0', protocol: '2', scope: '253', prefsrc: '10.0.0.1', flags: [] },
      { dst: '10.1.1.1', protocol: '193', flags: [], nexthops: [{ gateway: '10.0.0.3', dev: 'veth0' }, { gateway: '10.0.0.2', dev: 'veth0' }] },
      { dst: '10.9.0.0/16', gateway: '10.0.0.2', dev: 'veth0', flags: [] },
      { dst: 'default', gateway: '10.0.0.1', dev: 'veth0', protocol: '4', metric: 100, flags: [] },
    ]);
    assert.deepEqual(parseFibRoutes(v4, 4), [
      { family: 4, dst: '10.0.0.0/24', protocol: 2, metric: 0, type: 'unicast', gateways: [], dev: 'veth0' },
      { family: 4, dst: '10.1.1.1/32', protocol: 193, metric: 0, type: 'unicast', gateways: ['10.0.0.2', '10.0.0.3'] },
      { family: 4, dst: '10.9.0.0/16', protocol: 3, metric: 0, type: 'unicast', gateways: ['10.0.0.2'], dev: 'veth0' },
      { family: 4, dst: '0.0.0.0/0', protocol: 4, metric: 100, type: 'unicast', gateways: ['10.0.0.1'], dev: 'veth0' },
    ]);
    const v6 = JSON.stringify([{ dst: 'fd00:1::/64', gateway: 'fe80::1', dev: 'eth1', protocol: '193', metric: 1024, flags: [] }]);
    assert.deepEqual(parseFibRoutes(v6, 6)[0].gateways, ['fe80::1%eth1']);
    assert.throws(() => parseFibRoutes('{oops', 4), /cannot parse the JSON output/);
  });
});

// --- BgpFib over an in-memory kernel --------------------------------------------------------------

/** A main table in memory: keyed by prefix (one route per prefix), `route` commands parsed. */
class MemFibKernel implements FibKernel {
  readonly routes = new Map<string, FibKernelRoute>();
  /** address -> the route `ip route get fibmatch` would return. */
  readonly reach = new Map<string, FibKernelRoute>();
  readonly batches: string[][] = [];
  lookups = 0;

  async readRoutes(protocol?: number): Promise<FibKernelRoute[]> {
    return [...this.routes.values()].filter((r) => protocol === undefined || r.protocol === protocol);
  }
  async lookup(addrs: readonly string[]): Promise<Map<string, FibKernelRoute | undefined>> {
    this.lookups++;
    return new Map(addrs.map((a) => [a, this.reach.get(a)]));
  }
  async write(commands: readonly string[]): Promise<{ index: number; error: string }[]> {
    this.batches.push([...commands]);
    const failures: { index: number; error: string }[] = [];
    commands.forEach((c, index) => {
      const w = c.split(' ');
      const [, op, prefix] = w;
      const have = this.routes.get(prefix);
      const protocol = Number(w[w.indexOf('proto') + 1]);
      if (op === 'del') {
        if (have?.protocol === protocol) this.routes.delete(prefix);
        else failures.push({ index, error: 'RTNETLINK answers: No such process' });
        return;
      }
      if (op === 'add' && have) {
        failures.push({ index, error: 'RTNETLINK answers: File exists' });
        return;
      }
      const gateways = w.flatMap((x, i) => (x === 'via' ? [w[i + 1]] : [])).sort();
      this.routes.set(prefix, route(prefix, protocol, gateways));
    });
    return failures;
  }
  async close(): Promise<void> {}
  ours(): string[] {
    return [...this.routes.values()].filter((r) => r.protocol === BGP_ROUTE_PROTO).map((r) => `${r.dst} ${r.gateways.join(',')}`).sort();
  }
}

function connectedLab(): MemFibKernel {
  const k = new MemFibKernel();
  k.routes.set('10.0.0.0/24', route('10.0.0.0/24', 2, [], { dev: 'eth0' }));
  k.routes.set('10.9.0.0/16', route('10.9.0.0/16', 4, ['10.0.0.9']));
  k.reach.set('10.0.0.2', route('10.0.0.0/24', 2));
  k.reach.set('10.0.0.3', route('10.0.0.0/24', 2));
  k.reach.set('10.9.1.1', route('10.9.0.0/16', 4, ['10.0.0.9']));
  k.reach.set('fd00::2', route('fd00::/64', 2));
  return k;
}

const ch = (prefix: string, ...nextHops: string[]): FibChange => ({ prefix, family: prefix.includes(':') ? 6 : 4, nextHops });

describe('BgpFib (in-memory kernel)', () => {
  test('one batch per apply: single, multipath, v6, recursive; withdraw deletes', async () => {
    const k = connectedLab();
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    assert.deepEqual(await fib.start(), { stale: 0, foreign: 2 });
    const r = await fib.apply([ch('10.1.0.0/24', '10.0.0.2'), ch('10.2.0.0/24', '10.0.0.3', '10.0.0.2'), ch('fd00:1::/64', 'fd00::2'), ch('10.3.0.0/24', '10.9.1.1')]);
    assert.equal(r.added, 4);
    assert.equal(k.batches.length, 1);
    assert.deepEqual(k.ours(), ['10.1.0.0/24 10.0.0.2', '10.2.0.0/24 10.0.0.2,10.0.0.3', '10.3.0.0/24 10.0.0.9', 'fd00:1::/64 fd00::2']);
    const again = await fib.apply([ch('10.1.0.0/24', '10.0.0.2')]);
    assert.equal(again.commands, 0);
    assert.equal(again.unchanged, 1);
    const w = await fib.apply([ch('10.1.0.0/24'), ch('10.2.0.0/24', '10.0.0.2')]);
    assert.deepEqual([w.deleted, w.replaced], [1, 1]);
    assert.deepEqual(k.batches.at(-1), ['route del 10.1.0.0/24 proto 193 table main', 'route replace 10.2.0.0/24 via 10.0.0.2 proto 193 table main']);
    assert.equal(fib.counters().programmed, 6);
    await fib.close();
  });

  test('a foreign route is never touched: skipped with a counted warning', async () => {
    const k = connectedLab();
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    await fib.start();
    const r = await fib.apply([ch('10.9.0.0/16', '10.0.0.2')]);
    assert.equal(r.skippedForeign, 1);
    assert.equal(r.commands, 0);
    await fib.apply([ch('10.9.0.0/16')]);
    assert.equal(k.routes.get('10.9.0.0/16')?.protocol, 4);
    assert.equal(fib.counters().skippedForeign, 1);
    // One appearing behind our back: `add` fails with File exists, and it is left alone.
    k.routes.set('10.4.0.0/24', route('10.4.0.0/24', 4, ['10.0.0.9']));
    const r2 = await fib.apply([ch('10.4.0.0/24', '10.0.0.2')]);
    assert.deepEqual([r2.skippedForeign, r2.failed], [1, 0]);
    assert.deepEqual(k.routes.get('10.4.0.0/24')?.gateways, ['10.0.0.9']);
    assert.equal(fib.counters().skippedForeign, 2);
    await fib.close();
  });

  test('an unresolved next hop stays pending and is installed once it resolves', async () => {
    const k = connectedLab();
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    await fib.start();
    const r = await fib.apply([ch('10.5.0.0/24', '10.7.0.1'), ch('10.6.0.0/24', '10.7.0.1', '10.0.0.2')]);
    assert.equal(r.added, 1);
    assert.deepEqual(k.ours(), ['10.6.0.0/24 10.0.0.2']);
    assert.equal(fib.counters().unresolved, 1);
    assert.equal(fib.counters().pending, 2);
    k.reach.set('10.7.0.1', route('10.7.0.0/24', 2));
    await fib.retryPending();
    assert.deepEqual(k.ours(), ['10.5.0.0/24 10.7.0.1', '10.6.0.0/24 10.0.0.2,10.7.0.1']);
    assert.deepEqual([fib.counters().unresolved, fib.counters().pending], [0, 0]);
    // The route to a recursive next hop changes: refreshNextHops rewrites only what it affects.
    await fib.apply([ch('10.3.0.0/24', '10.9.1.1')]);
    k.reach.set('10.9.1.1', route('10.9.0.0/16', 4, ['10.0.0.8']));
    const before = k.batches.length;
    const ref = await fib.refreshNextHops();
    assert.deepEqual([ref.commands, ref.replaced], [1, 1]);
    assert.deepEqual(k.batches.slice(before), [['route replace 10.3.0.0/24 via 10.0.0.8 proto 193 table main']]);
    await fib.close();
  });

  test('graceful restart: routes from before are kept until syncDone removes the unconfirmed ones', async () => {
    const k = connectedLab();
    for (const p of ['10.1.0.0/24', '10.2.0.0/24', 'fd00:1::/64']) k.routes.set(p, route(p, BGP_ROUTE_PROTO, [p.includes(':') ? 'fd00::2' : '10.0.0.2']));
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    assert.deepEqual(await fib.start(), { stale: 3, foreign: 2 });
    const r = await fib.apply([ch('10.1.0.0/24', '10.0.0.2')]);
    assert.equal(r.commands, 0, 'a confirmed route is not rewritten');
    assert.equal(fib.counters().stale, 2);
    assert.equal(k.ours().length, 3);
    assert.deepEqual(await fib.syncDone(), { removed: 2, failed: 0 });
    assert.deepEqual(k.ours(), ['10.1.0.0/24 10.0.0.2']);
    await fib.close();
  });

  test('resync repairs drift: hand-deleted back, changed fixed, extra proto-193 deleted, foreign kept', async () => {
    const k = connectedLab();
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    await fib.start();
    await fib.syncDone();
    const all = [ch('10.1.0.0/24', '10.0.0.2'), ch('10.2.0.0/24', '10.0.0.2'), ch('10.3.0.0/24', '10.0.0.2')];
    await fib.apply(all);
    k.routes.delete('10.1.0.0/24');
    k.routes.set('10.2.0.0/24', route('10.2.0.0/24', BGP_ROUTE_PROTO, ['10.0.0.3']));
    k.routes.set('10.8.0.0/24', route('10.8.0.0/24', BGP_ROUTE_PROTO, ['10.0.0.2']));
    const r = await fib.resync(all);
    assert.deepEqual([r.added, r.replaced, r.deleted, r.unchanged], [1, 1, 1, 1]);
    assert.deepEqual(k.ours(), ['10.1.0.0/24 10.0.0.2', '10.2.0.0/24 10.0.0.2', '10.3.0.0/24 10.0.0.2']);
    assert.equal(k.routes.get('10.9.0.0/16')?.protocol, 4);
    assert.equal((await fib.resync(all)).commands, 0);
    await fib.close();
  });

  test('invalid changes are rejected and reported, the rest applied', async () => {
    const k = connectedLab();
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    await fib.start();
    const r = await fib.apply([ch('10.1.0.1/24', '10.0.0.2'), ch('10.2.0.0/24', '10.0.0.2')]);
    assert.equal(r.added, 1);
    assert.equal(r.rejected.length, 1);
    assert.match(r.rejected[0].error, /host bits/);
    await fib.close();
    await assert.rejects(fib.apply([]), /closed/);
  });

  test('exportedKernelRoutes lists the prefixes of the chosen protocols', async () => {
    const k = connectedLab();
    k.routes.set('fd00:9::/64', route('fd00:9::/64', 4, ['fd00::2']));
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    assert.deepEqual(await fib.exportedKernelRoutes([4, 4]), ['10.9.0.0/16', 'fd00:9::/64']);
    assert.deepEqual(await fib.exportedKernelRoutes([2, 4]), ['10.0.0.0/24', '10.9.0.0/16', 'fd00:9::/64']);
    await assert.rejects(fib.exportedKernelRoutes([256]), /invalid route protocol 256/);
    await fib.close();
  });
});
