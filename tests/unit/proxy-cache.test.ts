/**
 * The proxy's PrefixCache: applying events (prev_kv from the cache), ranges by prefix with limit /
 * keys-only / count-only in byte order, the event window and its eviction, and re-lists that turn
 * into events. Also which Range requests the cache may answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PrefixCache, prefixEnd, rangeWithin, keyInRange, type KeyValue, type CacheEvent } from '../../src/proxy/cache.ts';
import { cacheFor } from '../../src/proxy/server.ts';
import type { PrefixFeed } from '../../src/proxy/prefix-feed.ts';

function kv(key: string, value: string, mod: number, create = mod, version = 1): KeyValue {
  return { key: Buffer.from(key), value: Buffer.from(value), mod_revision: String(mod), create_revision: String(create), version: String(version), lease: '0' };
}
const put = (key: string, value: string, mod: number) => ({ type: 'Put' as const, kv: kv(key, value, mod) });
const del = (key: string, mod: number) => ({ type: 'Delete' as const, kv: { ...kv(key, '', mod), create_revision: '0', version: '0' } });
const keys = (kvs: readonly KeyValue[]) => kvs.map((x) => x.key.toString());
const all = (c: PrefixCache, limit = 0) => c.range({ key: c.prefix, rangeEnd: c.end, limit, keysOnly: false, countOnly: false });

test('prefixEnd and range containment follow etcd conventions', () => {
  assert.equal(prefixEnd('/calico/'), '/calico0');
  assert.equal(prefixEnd('a\xff'), 'b');
  assert.equal(prefixEnd('\xff\xff'), '\0');
  assert.ok(rangeWithin('/calico/x', '', '/calico/', '/calico0'));
  assert.ok(rangeWithin('/calico/', '/calico0', '/calico/', '/calico0'));
  assert.ok(rangeWithin('/calico/a', '/calico/b', '/calico/', '/calico0'));
  assert.ok(!rangeWithin('/calico', '/calico0', '/calico/', '/calico0'));
  assert.ok(!rangeWithin('/calico/', '\0', '/calico/', '/calico0'));
  assert.ok(!rangeWithin('/other', '', '/calico/', '/calico0'));
  assert.ok(keyInRange('a', 'a', ''));
  assert.ok(!keyInRange('ab', 'a', ''));
  assert.ok(keyInRange('zzz', 'a', '\0'));
});

test('apply: puts and deletes in order, prev_kv from the cache, revision advances, listeners see batches', () => {
  const c = new PrefixCache('/calico/');
  c.reset([kv('/calico/a', '1', 5)], 7);
  const seen: CacheEvent[][] = [];
  c.subscribe((b) => seen.push([...b]));
  const out = c.apply([put('/calico/a', '2', 8), put('/calico/b', 'x', 8)]);
  assert.equal(c.revision, 8);
  assert.equal(out[0]!.prev_kv?.value.toString(), '1');
  assert.equal(out[1]!.prev_kv, null);
  c.apply([del('/calico/a', 9)]);
  assert.deepEqual(keys(all(c).kvs), ['/calico/b']);
  assert.equal(seen.length, 2);
  assert.equal(seen[1]![0]!.prev_kv?.value.toString(), '2');
  // Events at or below the cache's revision are already reflected.
  assert.deepEqual(c.apply([put('/calico/z', 'old', 9)]), []);
  assert.equal(c.size, 1);
});

test('range: byte order, sub-ranges, limit with more/count, keys-only, count-only', () => {
  const c = new PrefixCache('/calico/');
  // '/calico/é' is bytes ... 0xc3 0xa9: after every ASCII key in etcd's byte order.
  c.reset([kv('/calico/b', 'B', 3), kv('/calico/é', 'E', 4), kv('/calico/a', 'A', 2), kv('/calico/c/x', 'C', 5)], 5);
  assert.deepEqual(all(c).kvs.map((x) => x.value.toString()), ['A', 'B', 'C', 'E']);
  const limited = all(c, 2);
  assert.deepEqual([limited.kvs.length, limited.count, limited.more], [2, 4, true]);
  const exact = all(c, 4);
  assert.equal(exact.more, false);
  const one = c.range({ key: '/calico/b', rangeEnd: '', limit: 0, keysOnly: false, countOnly: false });
  assert.deepEqual(one.kvs.map((x) => x.value.toString()), ['B']);
  const sub = c.range({ key: '/calico/c/', rangeEnd: prefixEnd('/calico/c/'), limit: 0, keysOnly: true, countOnly: false });
  assert.deepEqual([keys(sub.kvs), sub.kvs[0]!.value.length], [['/calico/c/x'], 0]);
  const counted = c.range({ key: c.prefix, rangeEnd: c.end, limit: 1, keysOnly: false, countOnly: true });
  assert.deepEqual([counted.kvs.length, counted.count, counted.more], [0, 4, false]);
  assert.equal(c.range({ key: '/calico/nope', rangeEnd: '', limit: 0, keysOnly: false, countOnly: false }).count, 0);
});

test('window: events from a revision, eviction makes older starts unservable', () => {
  const c = new PrefixCache('/p/', 3);
  c.reset([], 10);
  assert.equal(c.eventsFrom(10), undefined, 'the list revision itself is before the window');
  assert.deepEqual(c.eventsFrom(11), []);
  c.apply([put('/p/a', '1', 11), put('/p/b', '1', 11)]);
  c.apply([put('/p/a', '2', 12)]);
  assert.deepEqual(c.eventsFrom(11)!.map((e) => e.revision), [11, 11, 12]);
  c.apply([put('/p/c', '1', 13)]);
  // One of revision 11's two events was evicted: revision 11 can no longer be replayed whole.
  assert.equal(c.windowStart, 11);
  assert.equal(c.eventsFrom(11), undefined);
  assert.deepEqual(c.eventsFrom(12)!.map((e) => e.revision), [12, 13]);
  assert.deepEqual(c.eventsFrom(14), []);
});

test('reset after a gap: differences become events at the new revision and the window restarts', () => {
  const c = new PrefixCache('/p/');
  c.reset([kv('/p/keep', 'k', 2), kv('/p/gone', 'g', 3), kv('/p/changed', 'old', 4)], 4);
  const seen: CacheEvent[] = [];
  c.subscribe((b) => seen.push(...b));
  const diff = c.reset([kv('/p/keep', 'k', 2), kv('/p/changed', 'new', 9), kv('/p/new', 'n', 8)], 10);
  assert.deepEqual(diff.map((e) => [e.type, e.kv.key.toString(), e.revision]), [
    ['Delete', '/p/gone', 10],
    ['Put', '/p/changed', 10],
    ['Put', '/p/new', 10],
  ]);
  assert.equal(diff[0]!.prev_kv?.value.toString(), 'g');
  assert.equal(seen.length, 3);
  assert.equal(c.windowStart, 10);
  assert.deepEqual(keys(all(c).kvs), ['/p/changed', '/p/keep', '/p/new']);
});

test('property: the cache after any event sequence equals replaying it on a map', () => {
  const op = fc.record({ del: fc.boolean(), key: fc.constantFrom('a', 'b', 'c', 'd'), value: fc.string({ maxLength: 3 }) });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const c = new PrefixCache('/p/', 5);
      c.reset([], 1);
      const model = new Map<string, string>();
      let rev = 1;
      for (const o of ops) {
        rev++;
        const key = `/p/${o.key}`;
        if (o.del) {
          if (!model.has(key)) continue;
          model.delete(key);
          c.apply([del(key, rev)]);
        } else {
          model.set(key, o.value);
          c.apply([put(key, o.value, rev)]);
        }
      }
      const got = all(c).kvs.map((x) => [x.key.toString(), x.value.toString()]);
      assert.deepEqual(got, [...model.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
      const window = c.eventsFrom(c.windowStart + 1);
      assert.ok(window !== undefined && window.length <= 5);
    }),
  );
});

test('cacheFor: only current, key-ordered, unfiltered ranges inside a listed prefix', () => {
  const cache = new PrefixCache('/calico/');
  const feed = { serving: true, cache } as unknown as PrefixFeed;
  const base = {
    key: Buffer.from('/calico/'), range_end: Buffer.from('/calico0'), limit: '0', revision: '0', sort_order: 'None', sort_target: 'Key',
    serializable: true, keys_only: false, count_only: false, min_mod_revision: '0', max_mod_revision: '0', min_create_revision: '0', max_create_revision: '0',
  };
  assert.equal(cacheFor(base, [feed]), feed);
  assert.equal(cacheFor({ ...base, sort_order: 'Ascend' }, [feed]), feed);
  // Linearizable reads may use the cache too, after a read index (server.ts decides).
  assert.equal(cacheFor({ ...base, serializable: false }, [feed]), feed);
  assert.equal(cacheFor({ ...base, revision: '3' }, [feed]), undefined);
  assert.equal(cacheFor({ ...base, sort_order: 'Descend' }, [feed]), undefined);
  assert.equal(cacheFor({ ...base, min_mod_revision: '2' }, [feed]), undefined);
  assert.equal(cacheFor({ ...base, key: Buffer.from('/other/') }, [feed]), undefined);
  assert.equal(cacheFor({ ...base, key: Buffer.from('/other/x'), range_end: Buffer.alloc(0) }, [feed]), undefined);
  assert.equal(cacheFor({ ...base, key: Buffer.from('/calico/x'), range_end: Buffer.alloc(0) }, [feed]), feed);
  assert.equal(cacheFor({ ...base, range_end: Buffer.from([0]) }, [feed]), undefined);
  assert.equal(cacheFor(base, [{ serving: false, cache } as unknown as PrefixFeed]), undefined, 'never listed: nothing to answer from');
});
