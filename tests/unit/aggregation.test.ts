/**
 * Route aggregation (src/agent/aggregation.ts): confirmed affine blocks are advertised as one
 * prefix each, workload addresses inside them are not, borrowed addresses are; the affinity table
 * follows syncer updates (confirmed only, deleted / other hosts / bad values ignored). Plus the
 * FIB's block blackholes (BgpFib.setBlackholes) over an in-memory kernel.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AffinityTable, aggregateRoutes, canonicalPrefix } from '../../src/agent/aggregation.ts';
import { BgpFib, blackholeCommand, type FibKernel, type FibKernelRoute } from '../../src/agent/kernel/fib.ts';
import type { SyncUpdate } from '../../src/datastore/syncer.ts';
import { setLogLevel } from '../../src/log.ts';

setLogLevel('silent');

describe('aggregateRoutes', () => {
  test('blocks replace their workloads; borrowed addresses stay; v4 and v6', () => {
    assert.deepEqual(
      aggregateRoutes(['10.70.1.0/26', 'fd00:70::100/122'], ['10.70.1.2/32', '10.70.1.63/32', '10.70.2.5/32', 'fd00:70::101/128', 'fd00:70::1/128']),
      ['10.70.1.0/26', '10.70.2.5/32', 'fd00:70::1/128', 'fd00:70::100/122'],
    );
    assert.deepEqual(aggregateRoutes([], ['10.70.1.2/32']), ['10.70.1.2/32'], 'no confirmed block: host routes');
    assert.deepEqual(aggregateRoutes(['10.70.1.0/26'], []), ['10.70.1.0/26'], 'an empty block is still advertised');
    assert.deepEqual(aggregateRoutes(['10.70.1.0/26'], ['10.70.1.64/32']), ['10.70.1.0/26', '10.70.1.64/32'], 'just outside');
  });

  test('canonical text, garbage dropped', () => {
    assert.equal(canonicalPrefix('fd00:0070:0::0100/122'), 'fd00:70::100/122');
    assert.equal(canonicalPrefix('10.70.1.5/26'), '10.70.1.0/26');
    assert.equal(canonicalPrefix('nope'), undefined);
    assert.deepEqual(aggregateRoutes(['bad'], ['also/bad', '10.0.0.1/32']), ['10.0.0.1/32']);
  });

  const v4Block = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 3 })).map(([b, q]) => `10.70.${b}.${q * 64}/26`);
  const v4Addr = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([b, h]) => `10.70.${b}.${h}/32`);

  test('property: every workload is covered by exactly what is advertised; nothing inside a block leaks', () => {
    fc.assert(
      fc.property(fc.uniqueArray(v4Block, { maxLength: 6 }), fc.uniqueArray(v4Addr, { maxLength: 40 }), (blocks, addrs) => {
        const out = aggregateRoutes(blocks, addrs);
        // Every address and block is in 10.70.0.0/16: same third octet, fourth within 64.
        const octets = (c: string) => c.split('/')[0]!.split('.').map(Number);
        const inBlock = (a: string) => blocks.some((b) => {
          const [, , a3, a4] = octets(a);
          const [, , b3, b4] = octets(b);
          return a3 === b3 && a4! >= b4! && a4! < b4! + 64;
        });
        for (const b of blocks) assert.ok(out.includes(b));
        for (const a of addrs) assert.equal(out.includes(a), !inBlock(a), a);
        assert.equal(out.length, blocks.length + addrs.filter((a) => !inBlock(a)).length);
        assert.deepEqual(out, [...out].sort());
      }),
    );
  });

  test('property: order-independent', () => {
    fc.assert(
      fc.property(fc.uniqueArray(v4Block, { maxLength: 5 }), fc.uniqueArray(v4Addr, { maxLength: 20 }), (blocks, addrs) => {
        assert.deepEqual(aggregateRoutes([...blocks].reverse(), [...addrs].reverse()), aggregateRoutes(blocks, addrs));
      }),
    );
  });
});

let rev = 1;
const aff = (host: string, v: 4 | 6, name: string, state: string | null, deleted = false): SyncUpdate => ({
  key: `/calico/ipam/v2/host/${host}/ipv${v}/block/${name}`,
  value: state === null ? null : JSON.stringify({ state, deleted }),
  revision: String(rev++),
});

describe('AffinityTable', () => {
  test('confirmed only; pending / pendingDeletion / deleted / other hosts are not', () => {
    const t = new AffinityTable('a');
    let r = t.apply([aff('a', 4, '10.70.1.0-26', 'pending'), aff('b', 4, '10.70.2.0-26', 'confirmed'), aff('a', 6, 'fd00:70::-122', 'confirmed')]);
    assert.deepEqual(t.confirmed(), ['fd00:70::/122']);
    assert.equal(r.changed, true);
    r = t.apply([aff('a', 4, '10.70.1.0-26', 'confirmed')]);
    assert.deepEqual(t.confirmed(), ['10.70.1.0/26', 'fd00:70::/122']);
    r = t.apply([aff('a', 4, '10.70.1.0-26', 'confirmed')]);
    assert.equal(r.changed, false);
    t.apply([aff('a', 4, '10.70.1.0-26', 'pendingDeletion')]);
    assert.deepEqual(t.confirmed(), ['fd00:70::/122']);
    t.apply([aff('a', 6, 'fd00:70::-122', 'confirmed', true)]);
    assert.deepEqual(t.confirmed(), []);
    t.apply([aff('a', 4, '10.70.3.0-26', ''), aff('a', 4, '10.70.4.0-26', 'confirmed')]);
    t.apply([aff('a', 4, '10.70.4.0-26', null)]);
    assert.deepEqual(t.confirmed(), ['10.70.3.0/26'], 'no state = confirmed (old Calico); delete removes');
  });

  test('a bad value is a problem and drops the entry', () => {
    const t = new AffinityTable('a');
    t.apply([aff('a', 4, '10.70.1.0-26', 'confirmed')]);
    const r = t.apply([{ key: '/calico/ipam/v2/host/a/ipv4/block/10.70.1.0-26', value: '{"state":"weird"}', revision: '9' }]);
    assert.equal(r.problems.length, 1);
    assert.match(r.problems[0]!, /weird/);
    assert.deepEqual(t.confirmed(), []);
  });
});

// --- BgpFib blackholes ------------------------------------------------------------------------------

/** A main table in memory keyed by prefix, understanding the blackhole commands. */
class MemKernel implements FibKernel {
  readonly routes = new Map<string, FibKernelRoute>();
  readonly batches: string[][] = [];
  async readRoutes(protocol?: number): Promise<FibKernelRoute[]> {
    return [...this.routes.values()].filter((r) => protocol === undefined || r.protocol === protocol);
  }
  async lookup(addrs: readonly string[]): Promise<Map<string, FibKernelRoute | undefined>> {
    return new Map(addrs.map((a) => [a, undefined]));
  }
  async write(commands: readonly string[]): Promise<{ index: number; error: string }[]> {
    this.batches.push([...commands]);
    const failures: { index: number; error: string }[] = [];
    commands.forEach((c, index) => {
      const w = c.split(' ');
      assert.equal(w[2], 'blackhole', c);
      const [, op, , prefix] = w;
      const protocol = Number(w[w.indexOf('proto') + 1]);
      const have = this.routes.get(prefix!);
      if (op === 'del') {
        if (have?.protocol === protocol && have.type === 'blackhole') this.routes.delete(prefix!);
        else failures.push({ index, error: 'RTNETLINK answers: No such process' });
      } else if (have) failures.push({ index, error: 'RTNETLINK answers: File exists' });
      else this.routes.set(prefix!, bh(prefix!, protocol));
    });
    return failures;
  }
  async close(): Promise<void> {}
}

const bh = (dst: string, protocol = 193, type = 'blackhole'): FibKernelRoute => {
  const family = dst.includes(':') ? 6 : 4;
  return { family, dst, protocol, metric: family === 6 ? 1024 : 0, type, gateways: [] };
};

describe('BgpFib.setBlackholes', () => {
  test('command text', () => {
    assert.equal(blackholeCommand('add', '10.70.1.0/26'), 'route add blackhole 10.70.1.0/26 proto 193 table main');
    assert.equal(blackholeCommand('del', 'fd00:70::/122'), 'route del blackhole fd00:70::/122 proto 193 table main');
    assert.throws(() => blackholeCommand('add', '10.70.1.1/26'), /non-canonical/);
  });

  test('adds missing, keeps foreign, deletes ours only when complete; kept across restart, not stale', async () => {
    const k = new MemKernel();
    k.routes.set('10.70.9.0/26', bh('10.70.9.0/26', 4, 'unicast'));
    k.routes.set('10.70.8.0/26', bh('10.70.8.0/26')); // ours, from before a restart
    const fib = new BgpFib({ kernel: k, retryIntervalMs: 0 });
    assert.deepEqual(await fib.start(), { stale: 0, foreign: 1 }, 'blackholes are not stale BGP routes');
    assert.deepEqual(fib.blackholes(), ['10.70.8.0/26']);
    let r = await fib.setBlackholes(['10.70.1.0/26', 'fd00:70::/122', '10.70.9.0/26'], false);
    assert.deepEqual(r, { added: 2, deleted: 0, failed: 0 });
    assert.equal(k.routes.get('10.70.9.0/26')!.protocol, 4, 'a foreign route is never touched');
    assert.ok(k.routes.has('10.70.8.0/26'), 'not complete: nothing removed');
    r = await fib.setBlackholes(['10.70.1.0/26', 'fd00:70::/122'], true);
    assert.deepEqual(r, { added: 0, deleted: 1, failed: 0 });
    assert.deepEqual(fib.blackholes(), ['10.70.1.0/26', 'fd00:70::/122']);
    await fib.syncDone();
    assert.deepEqual(fib.blackholes(), ['10.70.1.0/26', 'fd00:70::/122'], 'the BGP stale sweep leaves them');
    // Drift: one deleted behind our back comes back on resync.
    k.routes.delete('10.70.1.0/26');
    await fib.resync([]);
    assert.equal(k.routes.get('10.70.1.0/26')?.type, 'blackhole');
    r = await fib.setBlackholes([], true);
    assert.equal(r.deleted, 2);
    assert.deepEqual([...k.routes.keys()], ['10.70.9.0/26']);
    await fib.close();
  });
});
