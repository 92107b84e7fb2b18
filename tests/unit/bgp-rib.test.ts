/**
 * The BGP RIB (src/bgp/rib/): attribute interning, the decision process comparator by comparator,
 * order independence of the Loc-RIB (fast-check against a reference computed from the final
 * state), ECMP, RFC 4456 export rules and loop prevention, graceful-restart stale sweep, update
 * groups, and a 1,000,000-route timing/heap figure (printed, not asserted).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { AfiSafi, PathAttributes } from '../../src/bgp/types.ts';
import { AttrTable, attrKey } from '../../src/bgp/rib/attr-intern.ts';
import { COMPARATORS, asPathLength, compareAddress, comparePaths, decide, multipathEqual, type Path, type PeerInfo } from '../../src/bgp/rib/decision.ts';
import { Rib, exportAllowed, receiveLoop, reflectAttributes, type BestChange, type LocalConfig } from '../../src/bgp/rib/rib.ts';
import { UpdateGroups, exportAttributes, type GroupPolicy } from '../../src/bgp/rib/update-groups.ts';

const V4: AfiSafi = 'ipv4-unicast';
const AFS: readonly AfiSafi[] = ['ipv4-unicast', 'ipv6-unicast'];
const LOCAL: LocalConfig = { asn: 64512, routerId: '10.0.0.1' };

function peer(id: string, o: Partial<PeerInfo> = {}): PeerInfo {
  const n = Number(id.replace(/\D/g, '')) || 9;
  return { peerId: id, address: `192.0.2.${n}`, asn: 64512, ibgp: true, routerId: `10.0.1.${n}`, isReflectorClient: false, ...o };
}

const table = new AttrTable();
function path(p: PeerInfo, attrs: PathAttributes): Path {
  return { peer: p, interned: table.intern(attrs), stale: false };
}

const cmp = (reason: string) => COMPARATORS.find((c) => c.reason === reason)!.compare;

describe('attribute interning', () => {
  test('deep-equal sets map to one frozen object with a stable id; refcounts free it', () => {
    const t = new AttrTable();
    const a = t.intern({ origin: 0, asPath: [{ type: 'sequence', asns: [1, 2] }], communities: [5], nextHop: '10.0.0.9' });
    const b = t.intern({ nextHop: '10.0.0.9', communities: [5], asPath: [{ type: 'sequence', asns: [1, 2] }], origin: 0, med: undefined });
    assert.equal(a, b);
    assert.equal(a.attrs, b.attrs);
    assert.equal(a.refs, 2);
    assert.ok(Object.isFrozen(a.attrs) && Object.isFrozen(a.attrs.asPath) && Object.isFrozen(a.attrs.asPath![0].asns));
    const c = t.intern({ origin: 0, asPath: [{ type: 'set', asns: [1, 2] }], communities: [5], nextHop: '10.0.0.9' });
    assert.notEqual(c.id, a.id);
    assert.equal(t.size, 2);
    t.release(a);
    assert.equal(t.get(a.id), a);
    t.release(b);
    assert.equal(t.get(a.id), undefined);
    assert.equal(t.size, 1);
    assert.throws(() => t.retain(a));
    const d = t.intern({ origin: 0, asPath: [{ type: 'sequence', asns: [1, 2] }], communities: [5], nextHop: '10.0.0.9' });
    assert.notEqual(d.id, a.id, 'ids are never reused');
  });

  test('unknown attributes compare by bytes; re-interning the same object is cheap and counted', () => {
    const t = new AttrTable();
    const u1 = t.intern({ unknown: [{ flags: 0xc0, code: 99, value: new Uint8Array([1, 2]) }] });
    const u2 = t.intern({ unknown: [{ flags: 0xc0, code: 99, value: new Uint8Array([1, 2]) }] });
    const u3 = t.intern({ unknown: [{ flags: 0xc0, code: 99, value: new Uint8Array([1, 3]) }] });
    assert.equal(u1, u2);
    assert.notEqual(u1, u3);
    const shared: PathAttributes = { origin: 2 };
    for (let i = 0; i < 1000; i++) t.intern(shared);
    assert.equal(t.intern(shared).refs, 1001);
    assert.equal(t.intern(t.intern(shared).attrs).refs, 1003, 'the frozen output is recognised too');
    assert.equal(attrKey({ localPref: 100 }), attrKey({ localPref: 100, med: undefined }));
  });
});

describe('decision comparators', () => {
  const A = peer('p1');
  const B = peer('p2');
  test('locally originated beats everything', () => {
    const loc = path({ ...peer('p0'), peerId: 'local', local: true }, { localPref: 1 });
    const other = path(A, { localPref: 1000 });
    assert.ok(cmp('locally-originated')(loc, other) < 0);
    assert.deepEqual(comparePaths(other, loc), { winner: loc, reason: 'locally-originated' });
  });
  test('highest LOCAL_PREF, 100 when absent', () => {
    assert.ok(cmp('local-pref')(path(A, { localPref: 200 }), path(B, {})) < 0);
    assert.ok(cmp('local-pref')(path(A, { localPref: 50 }), path(B, {})) > 0);
    assert.equal(cmp('local-pref')(path(A, { localPref: 100 }), path(B, {})), 0);
    assert.equal(comparePaths(path(A, { localPref: 50 }), path(B, {})).reason, 'local-pref');
  });
  test('shortest AS_PATH; a set counts 1, confed segments 0', () => {
    assert.equal(asPathLength([{ type: 'sequence', asns: [1, 2, 3] }, { type: 'set', asns: [4, 5, 6] }, { type: 'confed-sequence', asns: [7] }]), 4);
    const short = path(A, { asPath: [{ type: 'sequence', asns: [1] }, { type: 'set', asns: [2, 3, 4] }] });
    const long = path(B, { asPath: [{ type: 'sequence', asns: [1, 2, 3] }] });
    assert.ok(cmp('as-path-length')(short, long) < 0);
    assert.equal(comparePaths(long, short).reason, 'as-path-length');
  });
  test('lowest ORIGIN', () => {
    assert.ok(cmp('origin')(path(A, { origin: 0 }), path(B, { origin: 1 })) < 0);
    assert.ok(cmp('origin')(path(A, { origin: 2 }), path(B, { origin: 1 })) > 0);
  });
  test('lowest MED only between paths from the same neighbouring AS; missing MED is 0', () => {
    const as = (n: number) => [{ type: 'sequence' as const, asns: [n, 7] }];
    assert.ok(cmp('med')(path(A, { asPath: as(1), med: 5 }), path(B, { asPath: as(1), med: 10 })) < 0);
    assert.ok(cmp('med')(path(A, { asPath: as(1), med: 5 }), path(B, { asPath: as(1) })) > 0);
    assert.equal(cmp('med')(path(A, { asPath: as(1), med: 5 }), path(B, { asPath: as(2), med: 10 })), 0);
  });
  test('eBGP over iBGP', () => {
    const e = path(peer('p5', { ibgp: false, asn: 65001 }), {});
    assert.ok(cmp('ebgp-over-ibgp')(e, path(A, {})) < 0);
    assert.equal(comparePaths(path(A, {}), e).reason, 'ebgp-over-ibgp');
  });
  test('lowest ORIGINATOR_ID or router id, numerically', () => {
    assert.ok(cmp('router-id')(path(peer('p1', { routerId: '10.0.0.9' }), {}), path(peer('p2', { routerId: '10.0.0.10' }), {})) < 0);
    assert.ok(cmp('router-id')(path(peer('p1', { routerId: '1.1.1.1' }), { originatorId: '10.9.9.9' }), path(peer('p2', { routerId: '2.2.2.2' }), {})) > 0);
  });
  test('shortest CLUSTER_LIST, then lowest peer address, then peer id', () => {
    const same = { routerId: '1.1.1.1' };
    assert.ok(cmp('cluster-list-length')(path(peer('p1', same), { clusterList: ['1.1.1.1'] }), path(peer('p2', same), { clusterList: ['1.1.1.1', '2.2.2.2'] })) < 0);
    const x = path(peer('x', { ...same, address: '192.0.2.10' }), {});
    const y = path(peer('y', { ...same, address: '192.0.2.9' }), {});
    assert.deepEqual(comparePaths(x, y), { winner: y, reason: 'peer-address' });
    assert.ok(compareAddress('fd00::2', 'fd00::10') < 0);
    assert.ok(compareAddress('fd00::1:0', 'fd00::ffff') > 0);
    assert.ok(compareAddress('10.0.0.1', '::1') < 0);
    assert.ok(compareAddress('::ffff:10.0.0.2', '::ffff:10.0.0.1') > 0);
    const z1 = path(peer('z1', { ...same, address: '192.0.2.1' }), {});
    const z2 = path(peer('z2', { ...same, address: '192.0.2.1' }), {});
    assert.deepEqual(comparePaths(z2, z1), { winner: z1, reason: 'peer-id' });
  });
  test('multipathEqual stops after eBGP/iBGP', () => {
    const a = path(peer('p1', { routerId: '1.1.1.1' }), { localPref: 100, asPath: [{ type: 'sequence', asns: [1, 2] }] });
    const b = path(peer('p2', { routerId: '2.2.2.2' }), { asPath: [{ type: 'sequence', asns: [3, 4] }], clusterList: ['9.9.9.9'] });
    assert.ok(multipathEqual(a, b));
    assert.ok(!multipathEqual(a, path(peer('p3'), { asPath: [{ type: 'sequence', asns: [3] }] })));
    const d = decide([b, a], 4)!;
    assert.equal(d.best, a);
    assert.equal(d.reason, 'router-id');
    assert.deepEqual(d.multipath, [a, b]);
    assert.deepEqual(decide([b, a], 1)!.multipath, [a]);
  });
  test('the MED step is applied by elimination, so the result does not depend on input order', () => {
    // Classic MED non-transitivity: A (AS1, med 10), B (AS2, med 5), C (AS1, med 5).
    const pa = path(peer('p3', { routerId: '1.0.0.1' }), { asPath: [{ type: 'sequence', asns: [1] }], med: 10 });
    const pb = path(peer('p2', { routerId: '1.0.0.3' }), { asPath: [{ type: 'sequence', asns: [2] }], med: 5 });
    const pc = path(peer('p1', { routerId: '1.0.0.2' }), { asPath: [{ type: 'sequence', asns: [1] }], med: 5 });
    const orders = [[pa, pb, pc], [pa, pc, pb], [pb, pa, pc], [pb, pc, pa], [pc, pa, pb], [pc, pb, pa]];
    const results = orders.map((o) => decide(o)!);
    for (const r of results) {
      assert.equal(r.best, pc);
      assert.equal(r.reason, 'router-id');
    }
  });
});

describe('RFC 4456 export rules and loop prevention', () => {
  const client = peer('c1', { isReflectorClient: true, routerId: '10.0.2.1' });
  const client2 = peer('c2', { isReflectorClient: true, routerId: '10.0.2.2' });
  const nonClient = peer('n1', { routerId: '10.0.3.1' });
  const nonClient2 = peer('n2', { routerId: '10.0.3.2' });
  const ebgp = peer('e1', { ibgp: false, asn: 65001, routerId: '10.0.4.1' });
  const ebgp2 = peer('e2', { ibgp: false, asn: 65002, routerId: '10.0.4.2' });
  const localP: PeerInfo = { peerId: 'local', address: '0.0.0.0', asn: 64512, ibgp: false, routerId: LOCAL.routerId, isReflectorClient: false, local: true };
  const cases: Array<[string, PeerInfo, PathAttributes, PeerInfo, boolean]> = [
    ['non-client -> client', nonClient, {}, client, true],
    ['non-client -> non-client', nonClient, {}, nonClient2, false],
    ['non-client -> eBGP', nonClient, {}, ebgp, true],
    ['client -> client', client, {}, client2, true],
    ['client -> non-client', client, {}, nonClient, true],
    ['client -> eBGP', client, {}, ebgp, true],
    ['client -> itself', client, {}, client, false],
    ['client -> the originator', client, { originatorId: '10.0.3.1' }, nonClient, false],
    ['eBGP -> client', ebgp, {}, client, true],
    ['eBGP -> non-client', ebgp, {}, nonClient, true],
    ['eBGP -> other eBGP', ebgp, {}, ebgp2, true],
    ['eBGP -> itself', ebgp, {}, ebgp, false],
    ['local -> non-client', localP, {}, nonClient, true],
    ['local -> eBGP', localP, {}, ebgp, true],
  ];
  for (const [name, from, attrs, to, want] of cases) {
    test(name, () => assert.equal(exportAllowed(path(from, attrs), to, LOCAL), want));
  }
  test('not a reflector (no clients): iBGP-learned never goes to iBGP', () => {
    for (const to of [nonClient2, nonClient]) assert.equal(exportAllowed(path(nonClient, {}), to, LOCAL), false);
  });
  test('reflectAttributes sets ORIGINATOR_ID if absent and prepends the cluster id', () => {
    assert.deepEqual(reflectAttributes({ localPref: 7 }, client, LOCAL), { localPref: 7, originatorId: '10.0.2.1', clusterList: ['10.0.0.1'] });
    assert.deepEqual(reflectAttributes({ originatorId: '9.9.9.9', clusterList: ['8.8.8.8'] }, client, { ...LOCAL, clusterId: '1.2.3.4' }), {
      originatorId: '9.9.9.9',
      clusterList: ['1.2.3.4', '8.8.8.8'],
    });
  });
  test('loop prevention on receive', () => {
    assert.ok(receiveLoop({ originatorId: '10.0.0.1' }, client, LOCAL));
    assert.ok(receiveLoop({ clusterList: ['5.5.5.5', '10.0.0.1'] }, client, LOCAL));
    assert.ok(receiveLoop({ clusterList: ['1.2.3.4'] }, client, { ...LOCAL, clusterId: '1.2.3.4' }));
    assert.equal(receiveLoop({ clusterList: ['10.0.0.1'] }, client, { ...LOCAL, clusterId: '1.2.3.4' }), undefined);
    assert.ok(receiveLoop({ asPath: [{ type: 'sequence', asns: [65001, 64512] }] }, ebgp, LOCAL));
    assert.ok(receiveLoop({ asPath: [{ type: 'set', asns: [64512] }] }, ebgp, LOCAL));
    assert.equal(receiveLoop({ asPath: [{ type: 'sequence', asns: [65001] }] }, ebgp, LOCAL), undefined);
    assert.equal(receiveLoop({ asPath: [] }, nonClient, LOCAL), undefined);

    const rib = new Rib(LOCAL);
    rib.addPeer(ebgp);
    rib.addPeer(client);
    rib.update(ebgp, V4, [{ prefix: '10.1.0.0/16', attrs: { origin: 0, asPath: [{ type: 'sequence', asns: [65001] }] } }], []);
    assert.ok(rib.best(V4, '10.1.0.0/16'));
    // A looped re-announcement replaces (withdraws) the earlier path.
    const r = rib.update(ebgp, V4, [{ prefix: '10.1.0.0/16', attrs: { origin: 0, asPath: [{ type: 'sequence', asns: [65001, 64512] }] } }], []);
    assert.deepEqual(r, { accepted: 0, withdrawn: 0, looped: 1 });
    assert.equal(rib.best(V4, '10.1.0.0/16'), undefined);
    assert.equal(rib.update(client, V4, [{ prefix: '10.2.0.0/16', attrs: { originatorId: '10.0.0.1' } }], []).looped, 1);
    assert.equal(rib.locRibSize(V4), 0);
    assert.equal(rib.attrs.size, 0, 'dropped and replaced attribute sets are freed');
  });
});

describe('Rib', () => {
  test('best path, reason, change batches, removePeer, local routes', () => {
    const rib = new Rib({ ...LOCAL, maxPaths: 4 });
    const batches: BestChange[][] = [];
    rib.onBestChanged((c) => batches.push(c));
    const p1 = peer('p1', { routerId: '10.0.1.1' });
    const p2 = peer('p2', { routerId: '10.0.1.2' });
    rib.addPeer(p1);
    rib.addPeer(p2);
    const attrs: PathAttributes = { origin: 0, asPath: [], nextHop: '192.0.2.1', localPref: 100 };
    rib.update(p1, V4, [{ prefix: '10.65.0.0/26', attrs }, { prefix: '10.65.0.64/26', attrs }], []);
    rib.update(p2, V4, [{ prefix: '10.65.0.0/26', attrs: { ...attrs, nextHop: '192.0.2.2' } }], []);
    assert.equal(batches.length, 0, 'nothing before flush');
    const changes = rib.flush();
    assert.equal(batches.length, 1);
    assert.equal(changes.length, 2);
    const c0 = changes.find((c) => c.prefix === '10.65.0.0/26')!;
    assert.equal(c0.best!.peer.peerId, 'p1');
    assert.equal(c0.reason, 'router-id');
    assert.deepEqual(c0.multipath.map((p) => p.peer.peerId), ['p1', 'p2']);
    assert.equal(changes.find((c) => c.prefix === '10.65.0.64/26')!.reason, 'only-path');
    assert.equal(rib.flush().length, 0, 'flush is idempotent');
    // Re-announcing identical attributes is not a change.
    rib.update(p1, V4, [{ prefix: '10.65.0.0/26', attrs: { ...attrs } }], []);
    assert.equal(rib.flush().length, 0);
    // A local workload route wins over learned ones.
    rib.originate('10.65.0.0/26', { origin: 0 });
    const [lc] = rib.flush();
    assert.equal(lc.best!.peer.local, true);
    assert.equal(lc.reason, 'locally-originated');
    assert.deepEqual(lc.multipath, [lc.best]);
    assert.ok(rib.withdrawLocal('10.65.0.0/26'));
    assert.equal(rib.flush()[0].best!.peer.peerId, 'p1');
    // Changes that cancel out inside one batch are not reported.
    rib.update(p2, V4, [{ prefix: '10.99.0.0/24', attrs }], []);
    rib.update(p2, V4, [], ['10.99.0.0/24']);
    assert.equal(rib.flush().length, 0);
    assert.equal(rib.removePeer(p1), 2);
    const after = rib.flush();
    assert.deepEqual(
      after.map((c) => [c.prefix, c.best?.peer.peerId, c.multipath.length]).sort(),
      [['10.65.0.0/26', 'p2', 1], ['10.65.0.64/26', undefined, 0]],
    );
    rib.removePeer(p2);
    assert.equal(rib.attrs.size, 0);
  });

  test('graceful restart: markStale keeps paths, refreshed ones survive sweepStale', () => {
    const rib = new Rib(LOCAL);
    const p1 = peer('p1');
    const p2 = peer('p2');
    rib.addPeer(p1);
    rib.addPeer(p2);
    const a: PathAttributes = { origin: 0, localPref: 100 };
    rib.update(p1, V4, ['10.0.1.0/24', '10.0.2.0/24', '10.0.3.0/24'].map((prefix) => ({ prefix, attrs: a })), []);
    rib.update(p2, V4, [{ prefix: '10.0.3.0/24', attrs: { origin: 0, localPref: 50 } }], []);
    rib.flush();
    assert.equal(rib.markStale(p1), 3);
    assert.equal(rib.flush().length, 0, 'stale paths stay best');
    assert.equal(rib.best(V4, '10.0.1.0/24')!.best.stale, true);
    rib.update(p1, V4, [{ prefix: '10.0.1.0/24', attrs: a }], []);
    assert.equal(rib.best(V4, '10.0.1.0/24')!.best.stale, false);
    assert.equal(rib.sweepStale(p1), 2);
    const ch = rib.flush();
    assert.deepEqual(ch.map((c) => [c.prefix, c.best?.peer.peerId]).sort(), [['10.0.2.0/24', undefined], ['10.0.3.0/24', 'p2']]);
    assert.deepEqual([...rib.adjRibIn(p1, V4).keys()], ['10.0.1.0/24']);
  });

  test('property: the Loc-RIB does not depend on the order announcements arrive', () => {
    const peers = [
      peer('p1', { routerId: '10.0.0.5', address: '192.0.2.1' }),
      peer('p2', { routerId: '10.0.0.4', address: '192.0.2.2', isReflectorClient: true }),
      peer('p3', { ibgp: false, asn: 65001, routerId: '10.0.0.4', address: '192.0.2.3' }),
      peer('p4', { ibgp: false, asn: 65002, routerId: '10.0.0.6', address: '192.0.2.4' }),
    ];
    const prefixes = ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24', 'fd00::/64'];
    const attrsArb: fc.Arbitrary<PathAttributes> = fc.record(
      {
        origin: fc.constantFrom(0 as const, 1 as const, 2 as const),
        localPref: fc.constantFrom(50, 100, 200),
        med: fc.constantFrom(0, 5, 10),
        asPath: fc.array(fc.constantFrom(65001, 65002, 65003, 64512), { maxLength: 3 }).map((asns) => (asns.length ? [{ type: 'sequence' as const, asns }] : [])),
        originatorId: fc.constantFrom('10.0.0.2', '10.0.0.9', '10.0.0.1'),
        clusterList: fc.array(fc.constantFrom('10.9.0.1', '10.9.0.2'), { maxLength: 2 }),
      },
      { requiredKeys: ['origin'] },
    );
    const opArb = fc.record({
      peer: fc.integer({ min: 0, max: peers.length - 1 }),
      prefix: fc.constantFrom(...prefixes),
      attrs: fc.option(attrsArb, { nil: undefined }), // undefined: withdraw
    });
    const ops = fc.array(opArb, { maxLength: 40 });
    fc.assert(
      fc.property(ops, fc.integer({ min: 0, max: 1_000_000 }), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 6 }), (list, seed, flushAt) => {
        // Interleave: ops of different peers may be reordered; each peer's own order is kept.
        const byPeer = peers.map((_, i) => list.filter((o) => o.peer === i));
        let s = seed;
        const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
        const cursors = byPeer.map(() => 0);
        const shuffled: typeof list = [];
        while (shuffled.length < list.length) {
          const i = Math.floor(rnd() * peers.length);
          if (cursors[i] < byPeer[i].length) shuffled.push(byPeer[i][cursors[i]++]);
        }
        const run = (seq: typeof list, flushes: number[]) => {
          const rib = new Rib({ ...LOCAL, maxPaths: 8 });
          for (const p of peers) rib.addPeer(p);
          const mirror = new Map<string, BestChange>();
          rib.onBestChanged((cs) => {
            assert.equal(new Set(cs.map((c) => c.afiSafi + c.prefix)).size, cs.length, 'one change per prefix per batch');
            for (const c of cs) mirror.set(c.afiSafi + c.prefix, c);
          });
          seq.forEach((o, k) => {
            const af: AfiSafi = o.prefix.includes(':') ? 'ipv6-unicast' : V4;
            if (o.attrs === undefined) rib.update(peers[o.peer], af, [], [o.prefix]);
            else rib.update(peers[o.peer], af, [{ prefix: o.prefix, attrs: o.attrs }], []);
            if (flushes.includes(k % 4)) rib.flush();
          });
          rib.flush();
          return { rib, mirror };
        };
        const a = run(list, []);
        const b = run(shuffled, flushAt);
        // Reference from the final state of each peer.
        for (const prefix of prefixes) {
          const af: AfiSafi = prefix.includes(':') ? 'ipv6-unicast' : V4;
          const ref: Path[] = [];
          peers.forEach((p, i) => {
            const last = [...byPeer[i]].reverse().find((o) => o.prefix === prefix);
            if (last?.attrs !== undefined && receiveLoop(last.attrs, p, LOCAL) === undefined) ref.push(path(p, last.attrs));
          });
          const want = decide(ref, 8);
          const summary = (d: ReturnType<typeof decide>) =>
            d && { best: d.best.peer.peerId, key: d.best.interned.key, reason: d.reason, mp: d.multipath.map((x) => x.peer.peerId) };
          for (const got of [a, b]) {
            assert.deepEqual(summary(got.rib.best(af, prefix)), summary(want));
            const m = got.mirror.get(af + prefix);
            assert.equal(m?.best?.peer.peerId, want?.best.peer.peerId, 'the change stream converges too');
            assert.deepEqual(m?.multipath.map((x) => x.peer.peerId) ?? [], want?.multipath.map((x) => x.peer.peerId) ?? []);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('Rib: one map per family (Adj-RIB-In derived), previous selection on each change', () => {
  // The Adj-RIB-In of a peer is the Loc-RIB map filtered by path.peer, and each BestChange carries
  // the selection the previous batch reported: both checked against a plain model under random
  // announce / withdraw / markStale / sweepStale / removePeer sequences with random flushes.
  const peers = [peer('p1'), peer('p2', { ibgp: false, asn: 65001 }), peer('p3')];
  const prefixes = ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24', 'fd00::/64'];
  const afOf = (prefix: string): AfiSafi => (prefix.includes(':') ? 'ipv6-unicast' : V4);
  const opArb = fc.oneof(
    fc.record({ op: fc.constant('announce' as const), peer: fc.nat(2), prefix: fc.constantFrom(...prefixes), lp: fc.constantFrom(50, 100, 200), nh: fc.constantFrom('192.0.2.1', '192.0.2.2') }),
    fc.record({ op: fc.constant('withdraw' as const), peer: fc.nat(2), prefix: fc.constantFrom(...prefixes) }),
    fc.record({ op: fc.constantFrom('markStale' as const, 'sweepStale' as const, 'removePeer' as const, 'flush' as const), peer: fc.nat(2) }),
  );
  test('property: adjRibIn / adjRibInSize match a model; previous is what was last reported', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        const rib = new Rib({ ...LOCAL, maxPaths: 4 });
        const inRib = new Set<number>();
        // model: peer -> prefix -> [attribute key, stale]
        const model = peers.map(() => new Map<string, { key: string; stale: boolean }>());
        const reported = new Map<string, { best: Path; multipath: readonly Path[] }>();
        const sel = (d: { best: Path; multipath: readonly Path[] } | undefined) => d && { best: d.best, mp: [...d.multipath] };
        rib.onBestChanged((cs) => {
          for (const c of cs) {
            const k = c.afiSafi + c.prefix;
            assert.deepEqual(sel(c.previous), sel(reported.get(k)), `previous of ${c.prefix}`);
            if (c.best === undefined) reported.delete(k);
            else reported.set(k, { best: c.best, multipath: c.multipath });
          }
        });
        const ensure = (i: number) => {
          if (!inRib.has(i)) {
            rib.addPeer(peers[i]);
            inRib.add(i);
          }
        };
        for (const o of ops) {
          const p = peers[o.peer];
          if (o.op === 'announce') {
            ensure(o.peer);
            const attrs: PathAttributes = { origin: 0, localPref: o.lp, nextHop: o.nh };
            rib.update(p, afOf(o.prefix), [{ prefix: o.prefix, attrs }], []);
            model[o.peer].set(o.prefix, { key: attrKey(attrs), stale: false });
          } else if (o.op === 'withdraw') {
            ensure(o.peer);
            rib.update(p, afOf(o.prefix), [], [o.prefix]);
            model[o.peer].delete(o.prefix);
          } else if (o.op === 'flush') {
            rib.flush();
          } else if (!inRib.has(o.peer)) {
            continue;
          } else if (o.op === 'markStale') {
            assert.equal(rib.markStale(p), model[o.peer].size);
            for (const v of model[o.peer].values()) v.stale = true;
          } else if (o.op === 'sweepStale') {
            const stale = [...model[o.peer]].filter(([, v]) => v.stale).map(([k]) => k);
            assert.equal(rib.sweepStale(p), stale.length);
            for (const k of stale) model[o.peer].delete(k);
          } else {
            assert.equal(rib.removePeer(p), model[o.peer].size);
            model[o.peer].clear();
            inRib.delete(o.peer);
          }
          for (const i of inRib) {
            for (const af of AFS) {
              const got = [...rib.adjRibIn(peers[i], af)].map(([k, v]) => [k, v.interned.key, v.stale, v.peer.peerId]).sort();
              const want = [...model[i]].filter(([k]) => afOf(k) === af).map(([k, v]) => [k, v.key, v.stale, peers[i].peerId]).sort();
              assert.deepEqual(got, want);
              assert.equal(rib.adjRibInSize(peers[i], af), want.length);
            }
          }
        }
        rib.flush();
        for (const af of AFS) {
          for (const [prefix, d] of rib.entries(af)) assert.deepEqual(sel(reported.get(af + prefix)), sel(d), 'the stream converges');
          assert.equal([...rib.flushedEntries(af)].length, rib.locRibSize(af), 'after a flush, reported = current');
        }
        assert.equal(reported.size, rib.locRibSize(V4) + rib.locRibSize('ipv6-unicast'));
      }),
      { numRuns: 300 },
    );
  });

  test('flushedEntries is the Loc-RIB as last reported while a batch is open', () => {
    const rib = new Rib(LOCAL);
    const p1 = peer('p1');
    rib.addPeer(p1);
    const a: PathAttributes = { origin: 0, nextHop: '192.0.2.1' };
    rib.update(p1, V4, [{ prefix: '10.0.1.0/24', attrs: a }, { prefix: '10.0.2.0/24', attrs: a }], []);
    rib.flush();
    rib.update(p1, V4, [{ prefix: '10.0.3.0/24', attrs: a }, { prefix: '10.0.1.0/24', attrs: { ...a, nextHop: '192.0.2.9' } }], ['10.0.2.0/24']);
    const flushed = [...rib.flushedEntries(V4)].map(([k, d]) => [k, d.best.interned.attrs.nextHop]).sort();
    assert.deepEqual(flushed, [['10.0.1.0/24', '192.0.2.1'], ['10.0.2.0/24', '192.0.2.1']]);
  });
});

describe('update groups', () => {
  const nh = { ipv4: '10.0.0.1', ipv6: 'fd00::1' };
  const ebgpPolicy: GroupPolicy = { kind: 'ebgp', nextHopSelf: nh };
  const clientPolicy: GroupPolicy = { kind: 'ibgp-client', nextHopSelf: nh };

  test('10,000 prefixes sharing attributes go out as one batch; a new peer gets a full dump', () => {
    const rib = new Rib(LOCAL);
    const groups = new UpdateGroups(rib);
    const outputs: ReturnType<UpdateGroups['process']>[] = [];
    rib.onBestChanged((c) => outputs.push(groups.process(c)));
    const g1 = groups.join('e1', ebgpPolicy);
    assert.deepEqual(g1.dump, []);
    const g2 = groups.join('e2', { kind: 'ebgp', nextHopSelf: { ...nh } });
    assert.equal(g1.group, g2.group, 'same policy, same group');
    const c = groups.join('c1', clientPolicy);
    assert.notEqual(c.group, g1.group);
    const src = peer('p1', { ibgp: false, asn: 65001, routerId: '10.0.9.9' });
    rib.addPeer(src);
    const attrs: PathAttributes = { origin: 0, asPath: [{ type: 'sequence', asns: [65001] }], nextHop: '192.0.2.1', med: 7 };
    const ann = Array.from({ length: 10_000 }, (_, i) => ({ prefix: `10.${(i >> 8) & 255}.${i & 255}.0/24`, attrs }));
    rib.update(src, V4, ann, []);
    rib.flush();
    assert.equal(outputs.length, 1);
    const byGroup = new Map(outputs[0].map((o) => [o.group, o]));
    const eb = byGroup.get(g1.group)!;
    assert.deepEqual([...eb.peers].sort(), ['e1', 'e2']);
    assert.equal(eb.batches.length, 1);
    assert.equal(eb.batches[0].nlri.length, 10_000);
    assert.deepEqual(eb.batches[0].attributes, { origin: 0, asPath: [{ type: 'sequence', asns: [64512, 65001] }], nextHop: '10.0.0.1' });
    const cb = byGroup.get(c.group)!;
    assert.equal(cb.batches.length, 1);
    assert.deepEqual(cb.batches[0].attributes, { ...attrs, localPref: 100 }, 'eBGP-learned to iBGP: next hop kept, LOCAL_PREF set');
    // A new peer joining an existing group gets the full table.
    const late = groups.join('e3', ebgpPolicy);
    assert.equal(late.group, g1.group);
    assert.equal(late.dump.length, 1);
    assert.equal(late.dump[0].nlri.length, 10_000);
    // A peer creating a new group gets it too (built from the Loc-RIB).
    const keep = groups.join('rs', { kind: 'ebgp', nextHopSelf: nh, keepOriginalNextHop: true });
    assert.equal(keep.dump[0].nlri.length, 10_000);
    assert.equal(keep.dump[0].attributes.nextHop, '192.0.2.1');
    // Withdrawals.
    rib.update(src, V4, [], ann.slice(0, 10).map((a) => a.prefix));
    rib.flush();
    const w = outputs[1].find((o) => o.group === g1.group)!;
    assert.deepEqual(w.batches, [{ afiSafi: V4, attributes: {}, nlri: [], withdrawn: ann.slice(0, 10).map((a) => ({ prefix: a.prefix })) }]);
    assert.equal(g1.group.adjOut[V4].size, 9_990);
    assert.equal(g1.group.attrs.size, 1, 'one outgoing attribute set');
    groups.leave('e1');
    groups.leave('e2');
    groups.leave('e3');
    assert.ok(!groups.groups.includes(g1.group));
  });

  test('reflection through groups, local routes with next-hop-self, IPv6 next hop', () => {
    const rib = new Rib({ ...LOCAL, clusterId: '1.1.1.1' });
    const groups = new UpdateGroups(rib);
    const nc = peer('n1', { routerId: '10.0.3.1' });
    const cl = peer('c1', { routerId: '10.0.2.1', isReflectorClient: true });
    rib.addPeer(nc);
    rib.addPeer(cl);
    const clients = groups.join('c2', clientPolicy).group;
    const nonClients = groups.join('n2', { kind: 'ibgp-nonclient', nextHopSelf: nh }).group;
    rib.update(nc, V4, [{ prefix: '10.5.0.0/16', attrs: { origin: 0, nextHop: '192.0.2.50', localPref: 100 } }], []);
    rib.update(cl, V4, [{ prefix: '10.6.0.0/16', attrs: { origin: 0, nextHop: '192.0.2.60' } }], []);
    rib.originate('10.65.1.2/32', { origin: 0 });
    rib.originate('fd00:65::2/128', { origin: 0 });
    const out = groups.process(rib.flush());
    const toClients = out.find((o) => o.group === clients)!.batches;
    const toNon = out.find((o) => o.group === nonClients)!.batches;
    const find = (bs: typeof toClients, prefix: string) => bs.find((b) => b.nlri.some((n) => n.prefix === prefix));
    assert.deepEqual(find(toClients, '10.5.0.0/16')!.attributes, { origin: 0, nextHop: '192.0.2.50', localPref: 100, originatorId: '10.0.3.1', clusterList: ['1.1.1.1'] });
    assert.equal(find(toNon, '10.5.0.0/16'), undefined, 'non-client routes are not reflected to non-clients');
    assert.deepEqual(find(toNon, '10.6.0.0/16')!.attributes, { origin: 0, nextHop: '192.0.2.60', localPref: 100, originatorId: '10.0.2.1', clusterList: ['1.1.1.1'] });
    assert.ok(find(toClients, '10.6.0.0/16'), 'client routes go to clients too (the originator drops its own)');
    assert.deepEqual(find(toNon, '10.65.1.2/32')!.attributes, { origin: 0, nextHop: '10.0.0.1', localPref: 100 });
    const v6 = find(toNon, 'fd00:65::2/128')!;
    assert.equal(v6.afiSafi, 'ipv6-unicast');
    assert.equal(v6.nextHop, 'fd00::1');
    // exportAttributes for eBGP strips iBGP-only attributes.
    const p = path(cl, { origin: 0, localPref: 300, originatorId: '1.2.3.4', clusterList: ['5.5.5.5'], med: 3 });
    assert.deepEqual(exportAttributes(p, ebgpPolicy, LOCAL, V4), { origin: 0, asPath: [{ type: 'sequence', asns: [64512] }], nextHop: '10.0.0.1' });
  });
});

describe('scale (printed, not asserted)', () => {
  test('1,000,000 /32 announcements from one peer sharing one attribute set', () => {
    const rib = new Rib(LOCAL);
    const p = peer('p1', { ibgp: false, asn: 65001 });
    rib.addPeer(p);
    const attrs: PathAttributes = { origin: 0, asPath: [{ type: 'sequence', asns: [65001] }], nextHop: '192.0.2.1' };
    const N = 1_000_000;
    const ann = new Array<{ prefix: string; attrs: PathAttributes }>(N);
    for (let i = 0; i < N; i++) ann[i] = { prefix: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, attrs };
    const chunks: Array<typeof ann> = [];
    for (let i = 0; i < N; i += 1000) chunks.push(ann.slice(i, i + 1000)); // UPDATE-sized batches
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    for (const c of chunks) rib.update(p, V4, c, []);
    const t1 = performance.now();
    const heapRib = process.memoryUsage().heapUsed;
    const changes = rib.flush();
    const t2 = performance.now();
    const heap1 = process.memoryUsage().heapUsed;
    assert.equal(rib.locRibSize(V4), N);
    assert.equal(rib.attrs.size, 1, 'one attribute set for all routes');
    assert.equal(rib.best(V4, '10.0.0.0/32')!.best.interned.refs, N);
    assert.equal(changes.length, N);
    console.log(
      `1M /32 into Loc-RIB: update ${(t1 - t0).toFixed(0)} ms, flush (1M changes) ${(t2 - t1).toFixed(0)} ms; ` +
        `heapUsed ${(heap0 / 1e6).toFixed(0)} MB (input built) -> ${(heapRib / 1e6).toFixed(0)} MB (RIB filled) -> ${(heap1 / 1e6).toFixed(0)} MB (after flush, change batch alive), ` +
        `rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`,
    );
    const t3 = performance.now();
    rib.removePeer(p);
    rib.flush();
    console.log(`removePeer of 1M routes + flush: ${(performance.now() - t3).toFixed(0)} ms`);
    assert.equal(rib.attrs.size, 0);
  });
});
