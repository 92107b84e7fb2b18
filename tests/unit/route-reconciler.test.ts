/**
 * RouteReconciler against the stateful FakeKernel: desired routes follow endpoints and interface
 * state, foreign routes are never touched, nothing is deleted before InSync, applies are idempotent
 * and drift is repaired after markDirty(). Also the `ip monitor` line parser the agent uses to know
 * when to mark dirty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FakeKernel } from '../../src/agent/kernel/fake-kernel.ts';
import { ROUTE_PROTO, canonicalCidr, routeOpCommand, type KernelRoute } from '../../src/agent/kernel/kernel.ts';
import { parseMonitorLine } from '../../src/agent/kernel/monitor.ts';
import { RouteReconciler } from '../../src/agent/route-reconciler.ts';
import type { LocalEndpoint } from '../../src/agent/model.ts';
import { rootLogger } from '../../src/log.ts';

rootLogger.level = -999;

function wep(name: string, iface: string, v4: string[], v6: string[] = []): LocalEndpoint {
  return {
    id: `wep/default/${name}`,
    type: 'workload',
    name,
    namespace: 'default',
    iface,
    ipv4Nets: v4,
    ipv6Nets: v6,
    allowSpoofedSourcePrefixes: [],
    labels: {},
    ingress: { tiers: [], profiles: [] },
    egress: { tiers: [], profiles: [] },
  };
}

/** Our routes as `dst dev` strings, sorted. */
function ours(k: FakeKernel): string[] {
  return k
    .routes()
    .filter((r) => r.protocol === ROUTE_PROTO)
    .map((r) => `${r.dst} ${r.dev}`)
    .sort();
}

function setup(eps: LocalEndpoint[], links: string[] = ['cali1', 'cali2', 'cali3']) {
  const k = new FakeKernel();
  for (const l of links) k.addLink(l);
  const rec = new RouteReconciler({ kernel: k });
  rec.setDesired(eps);
  return { k, rec };
}

test('routes: one route per workload address, proto 192 scope link, in one batch', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32'], ['fd00::1/128']), wep('b', 'cali2', ['10.65.0.2/32', '10.65.1.0/26'])]);
  const s = await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2', '10.65.1.0/26 cali2', 'fd00::1/128 cali1']);
  assert.equal(s.added, 4);
  assert.equal(s.batches, 1);
  assert.equal(s.commands, 4);
  assert.equal(s.total, 4);
  assert.equal(s.changed, 4);
  for (const r of k.routes()) {
    assert.equal(r.protocol, ROUTE_PROTO);
    if (r.family === 4) assert.equal(r.scope, 'link');
  }
  assert.ok(k.commandLog.includes('route add 10.65.0.1/32 dev cali1 proto 192 scope link table main'));
  assert.ok(k.commandLog.includes('route add fd00::1/128 dev cali1 proto 192 table main'));
});

test('routes: applying twice changes nothing the second time, with or without a re-read', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32'], ['fd00::1/128'])]);
  await rec.apply({ inSync: true });
  const again = await rec.apply({ inSync: true });
  assert.equal(again.commands, 0);
  assert.equal(again.readRoutes, false, 'a clean view is not re-read');
  rec.markDirty('test');
  const reread = await rec.apply({ inSync: true });
  assert.equal(reread.readRoutes, true);
  assert.equal(reread.commands, 0);
  assert.equal(reread.total, 2);
  assert.equal(k.counters().batches, 1);
});

test('routes: removing an endpoint deletes its route only when in sync', async () => {
  const a = wep('a', 'cali1', ['10.65.0.1/32']);
  const b = wep('b', 'cali2', ['10.65.0.2/32'], ['fd00::2/128']);
  const { k, rec } = setup([a, b]);
  await rec.apply({ inSync: true });
  rec.setDesired([a]);
  const notYet = await rec.apply({ inSync: false });
  assert.equal(notYet.deleted, 0);
  assert.equal(notYet.deletesDeferred, 2);
  assert.equal(notYet.commands, 0);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2', 'fd00::2/128 cali2']);
  const now = await rec.apply({ inSync: true });
  assert.equal(now.deleted, 2);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1']);
});

test('routes: inSync:false still adds, and deletes nothing even from a fresh start', async () => {
  const k = new FakeKernel();
  k.addLink('cali1');
  k.addLink('cali9');
  k.addRoute({ dst: '10.65.9.9/32', dev: 'cali9', protocol: ROUTE_PROTO });
  const rec = new RouteReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1', ['10.65.0.1/32'])]);
  const s = await rec.apply({ inSync: false });
  assert.equal(s.added, 1);
  assert.equal(s.deleted, 0);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.9.9/32 cali9']);
  await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1']);
});

test('routes: an interface that is missing, admin-down or without carrier gets no route', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32']), wep('b', 'cali2', ['10.65.0.2/32']), wep('c', 'cali4', ['10.65.0.4/32'])]);
  k.setLinkState('cali2', { adminUp: true, operState: 'LOWERLAYERDOWN' });
  const s = await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1']);
  assert.equal(s.waitingForIface, 2);

  // cali4 appears: picked up on the next apply even without markDirty (a waited-for iface re-reads links).
  k.addLink('cali4');
  await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.4/32 cali4']);

  // cali1 goes down (carrier): its route is removed once we hear of it.
  k.setLinkState('cali1', { adminUp: true, operState: 'DOWN' });
  rec.markDirty('link cali1 down');
  await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.4/32 cali4']);

  // and comes back.
  k.setLinkState('cali1', { adminUp: true });
  k.setLinkState('cali2', { adminUp: true });
  rec.markDirty('links up');
  await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2', '10.65.0.4/32 cali4']);
});

test('routes: foreign routes are never touched, even on our interfaces and at our destinations', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32']), wep('b', 'cali2', ['10.65.0.2/32'])]);
  k.addRoute({ dst: '192.168.7.0/24', dev: 'cali1', protocol: 4 /* static */ });
  k.addRoute({ dst: '10.65.0.2/32', dev: 'cali3', protocol: 4 });
  k.addRoute({ dst: '10.65.0.3/32', dev: 'cali3', protocol: 3 /* boot */ });
  const foreignBefore = k.routes().filter((r) => r.protocol !== ROUTE_PROTO);
  const s = await rec.apply({ inSync: true });
  assert.deepEqual(k.routes().filter((r) => r.protocol !== ROUTE_PROTO), foreignBefore);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1']);
  assert.equal(s.failed, 1, 'adding over a foreign route with the same key fails instead of replacing it');
  assert.match(s.errors[0], /10\.65\.0\.2\/32.*File exists/);

  // No endpoints at all: only our route goes.
  rec.setDesired([]);
  rec.markDirty();
  await rec.apply({ inSync: true });
  assert.deepEqual(k.routes().filter((r) => r.protocol !== ROUTE_PROTO), foreignBefore);
  assert.deepEqual(ours(k), []);
});

test('routes: drift is repaired after markDirty (deleted by hand, moved to another device)', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32'], ['fd00::1/128']), wep('b', 'cali2', ['10.65.0.2/32'])]);
  await rec.apply({ inSync: true });
  assert.equal(k.deleteRoutes((r) => r.dst === '10.65.0.1/32'), 1);
  k.deleteRoutes((r) => r.dst === '10.65.0.2/32');
  k.addRoute({ dst: '10.65.0.2/32', dev: 'cali3', protocol: ROUTE_PROTO }); // ours, wrong device
  k.addRoute({ dst: 'fd00::1/128', dev: 'cali1', protocol: ROUTE_PROTO, metric: 5 }); // ours, extra metric

  const clean = await rec.apply({ inSync: true });
  assert.equal(clean.commands, 0, 'without markDirty the cached view is trusted');

  rec.markDirty('monitor: route deleted');
  const s = await rec.apply({ inSync: true });
  assert.equal(s.added, 1);
  assert.equal(s.replaced, 1);
  assert.equal(s.deleted, 1);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2', 'fd00::1/128 cali1']);
  assert.ok(k.routes().every((r) => r.metric !== 5));
  rec.markDirty();
  assert.equal((await rec.apply({ inSync: true })).commands, 0);
});

test('routes: a monitored removal marks dirty only for a route our view still has (not our own delete)', async () => {
  const a = wep('a', 'cali1', ['10.65.0.1/32'], ['fd00::1/128']);
  const { k, rec } = setup([a, wep('b', 'cali2', ['10.65.0.2/32'])]);
  await rec.apply({ inSync: true });
  rec.setDesired([a]);
  await rec.apply({ inSync: true }); // deletes 10.65.0.2/32
  assert.equal(rec.routeRemoved('10.65.0.2/32', 'cali2', 0), false, 'echo of our own delete');
  assert.equal(rec.dirty, false);
  k.deleteRoutes((r) => r.dst === 'fd00::1/128');
  assert.equal(rec.routeRemoved('fd00::1/128', 'cali1', 1024), true, 'somebody else removed it');
  assert.equal(rec.dirty, true);
  const s = await rec.apply({ inSync: true });
  assert.equal(s.added, 1);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', 'fd00::1/128 cali1']);
});

test('routes: a failed command marks the view dirty and is retried', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32']), wep('b', 'cali2', ['10.65.0.2/32'])]);
  k.failOps((op) => op.route.dst === '10.65.0.2/32', 'RTNETLINK answers: No buffer space available');
  const s = await rec.apply({ inSync: true });
  assert.equal(s.failed, 1);
  assert.equal(s.added, 1);
  assert.equal(s.total, 1);
  assert.equal(rec.dirty, true);
  k.clearFailures();
  const retry = await rec.apply({ inSync: true });
  assert.equal(retry.readRoutes, true);
  assert.equal(retry.added, 1);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2']);
});

test('routes: a deleted link takes its routes with it; re-created, the route comes back', async () => {
  const { k, rec } = setup([wep('a', 'cali1', ['10.65.0.1/32']), wep('b', 'cali2', ['10.65.0.2/32'])]);
  await rec.apply({ inSync: true });
  k.removeLink('cali2');
  rec.markDirty('link removed');
  const gone = await rec.apply({ inSync: true });
  assert.equal(gone.failed, 0);
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1']);
  k.addLink('cali2');
  rec.markDirty('link added');
  await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.1/32 cali1', '10.65.0.2/32 cali2']);
});

test('routes: two endpoints claiming one address: the first endpoint id wins; host endpoints and bad CIDRs are skipped', async () => {
  const hep: LocalEndpoint = { ...wep('h', 'eth0', ['10.0.0.5/32']), id: 'hep/h', type: 'host' };
  const { k, rec } = setup([wep('b', 'cali2', ['10.65.0.7/32']), wep('a', 'cali1', ['10.65.0.7', 'nonsense', '10.65.0.8/33']), hep], ['cali1', 'cali2', 'eth0']);
  const s = await rec.apply({ inSync: true });
  assert.deepEqual(ours(k), ['10.65.0.7/32 cali1']);
  assert.equal(s.conflicts, 1);
  assert.equal(s.invalid, 2);
});

test('routes: canonical CIDRs and command text', () => {
  assert.deepEqual(canonicalCidr('10.1.2.3'), { family: 4, cidr: '10.1.2.3/32' });
  assert.deepEqual(canonicalCidr('10.1.2.3/24'), { family: 4, cidr: '10.1.2.0/24' });
  assert.deepEqual(canonicalCidr('FD00:0:0::0001/128'), { family: 6, cidr: 'fd00::1/128' });
  assert.throws(() => canonicalCidr('10.0.0.0/33'), /prefix length/);
  assert.equal(
    routeOpCommand({ op: 'del', route: { family: 6, dst: 'fd00::1/128', dev: 'cali1', protocol: 192, metric: 1024 } }),
    'route del fd00::1/128 dev cali1 proto 192 metric 1024 table main',
  );
  assert.throws(() => routeOpCommand({ op: 'add', route: { family: 4, dst: '10.0.0.1/32', dev: 'bad dev', protocol: 192 } }), /interface name/);
});

test('routes: model-based — after any history, one dirty apply in sync yields exactly the desired routes', async () => {
  const IFACES = ['cali1', 'cali2', 'cali3', 'cali4'];
  const action = fc.oneof(
    fc.record({ t: fc.constant('endpoints' as const), eps: fc.array(fc.record({ i: fc.integer({ min: 0, max: 3 }), ip: fc.integer({ min: 1, max: 6 }) }), { maxLength: 6 }) }),
    fc.record({ t: fc.constant('link' as const), i: fc.integer({ min: 0, max: 3 }), up: fc.boolean(), exists: fc.boolean() }),
    fc.record({ t: fc.constant('handDelete' as const), ip: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ t: fc.constant('foreign' as const), ip: fc.integer({ min: 5, max: 9 }), i: fc.integer({ min: 0, max: 3 }) }),
    fc.record({ t: fc.constant('apply' as const), inSync: fc.boolean(), dirty: fc.boolean() }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(action, { maxLength: 25 }), async (actions) => {
      const k = new FakeKernel();
      for (const l of IFACES) k.addLink(l);
      const rec = new RouteReconciler({ kernel: k });
      let eps: LocalEndpoint[] = [];
      rec.setDesired(eps);
      for (const a of actions) {
        switch (a.t) {
          case 'endpoints':
            eps = a.eps.map((e, n) => wep(`e${n}`, IFACES[e.i], [`10.65.0.${e.ip}/32`], [`fd00::${e.ip}/128`]));
            rec.setDesired(eps);
            break;
          case 'link': {
            const name = IFACES[a.i];
            const has = (await k.listLinks()).some((l) => l.name === name);
            if (a.exists && !has) k.addLink(name, { adminUp: a.up });
            else if (!a.exists && has) k.removeLink(name);
            else if (has) k.setLinkState(name, { adminUp: a.up });
            break;
          }
          case 'handDelete':
            k.deleteRoutes((r) => r.dst === `10.65.0.${a.ip}/32`);
            break;
          case 'foreign': {
            const name = IFACES[a.i];
            if ((await k.listLinks()).some((l) => l.name === name)) k.addRoute({ dst: `10.65.0.${a.ip}/32`, dev: name, protocol: 4, metric: 7 });
            break;
          }
          case 'apply':
            if (a.dirty) rec.markDirty();
            await rec.apply({ inSync: a.inSync });
            break;
        }
      }
      const foreign = (rs: KernelRoute[]) => rs.filter((r) => r.protocol !== ROUTE_PROTO);
      const foreignBefore = foreign(k.routes());
      rec.markDirty();
      await rec.apply({ inSync: true });
      // Expected: first endpoint (by id) per address, on an up interface.
      const links = new Map((await k.listLinks()).map((l) => [l.name, l]));
      const want = new Map<string, string>();
      for (const ep of [...eps].sort((x, y) => (x.id < y.id ? -1 : 1))) {
        for (const net of [...ep.ipv4Nets, ...ep.ipv6Nets]) {
          const dst = canonicalCidr(net).cidr;
          if (want.has(dst)) continue;
          want.set(dst, ep.iface);
        }
      }
      const expected = [...want]
        .filter(([, dev]) => links.get(dev)?.adminUp === true)
        .map(([dst, dev]) => `${dst} ${dev}`)
        .sort();
      assert.deepEqual(ours(k), expected);
      assert.deepEqual(foreign(k.routes()), foreignBefore, 'foreign routes untouched');
      rec.markDirty();
      assert.equal((await rec.apply({ inSync: true })).commands, 0, 'idempotent');
    }),
    { numRuns: 200 },
  );
});

test('monitor: ip -o -N monitor lines parse into link, address and route events', () => {
  assert.deepEqual(
    parseMonitorLine('3: cali1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group 0 \\    link/[1] ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff'),
    { kind: 'link', deleted: false, index: 3, name: 'cali1', adminUp: true, operState: 'UP' },
  );
  assert.deepEqual(
    parseMonitorLine('Deleted 5: d1@NONE: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN group 0 \\    link/[1] 0e:ab:1f:4b:cb:bf'),
    { kind: 'link', deleted: true, index: 5, name: 'd1', adminUp: false, operState: 'DOWN' },
  );
  assert.deepEqual(parseMonitorLine('Deleted 10.65.0.1 dev cali1 proto 192 scope 253 '), {
    kind: 'route',
    deleted: true,
    dst: '10.65.0.1/32',
    dev: 'cali1',
    protocol: 192,
    metric: 0,
  });
  assert.deepEqual(parseMonitorLine('5 ff00::/8 dev d1 table 255 proto 2 metric 256 pref medium'), {
    kind: 'route',
    deleted: false,
    dst: 'ff00::/8',
    dev: 'd1',
    protocol: 2,
    table: 255,
    metric: 256,
    routeType: 5,
  });
  assert.deepEqual(parseMonitorLine('3: d1    inet 10.9.0.1/32 scope 0 d1\\       valid_lft forever preferred_lft forever'), {
    kind: 'address',
    deleted: false,
    index: 3,
    iface: 'd1',
    family: 4,
    address: '10.9.0.1/32',
  });
  assert.equal(parseMonitorLine(''), undefined);
  assert.equal(parseMonitorLine('something else entirely'), undefined);
});
