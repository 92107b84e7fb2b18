/**
 * IfaceReconciler against the FakeKernel: the Calico sysctls on every prefixed interface of a local
 * endpoint (and only those), the global forwarding switches, idempotence, drift repair after
 * markDirty(), IPv6-less kernels, and interface state reported but never changed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeKernel } from '../../src/agent/kernel/fake-kernel.ts';
import { IfaceReconciler, GLOBAL_SYSCTLS, ifaceSysctls } from '../../src/agent/iface-reconciler.ts';
import type { LocalEndpoint } from '../../src/agent/model.ts';
import { rootLogger } from '../../src/log.ts';

rootLogger.level = -999;

function wep(name: string, iface: string): LocalEndpoint {
  return {
    id: `wep/default/${name}`,
    type: 'workload',
    name,
    namespace: 'default',
    iface,
    ipv4Nets: ['10.65.0.1/32'],
    ipv6Nets: [],
    allowSpoofedSourcePrefixes: [],
    labels: {},
    ingress: { tiers: [], profiles: [] },
    egress: { tiers: [], profiles: [] },
  };
}

function configured(k: FakeKernel, iface: string): boolean {
  return ifaceSysctls(iface).every(([p, v]) => k.sysctl(p) === v);
}

test('ifaces: sets the Calico sysctls on prefixed endpoint interfaces only, and the global switches', async () => {
  const k = new FakeKernel();
  for (const l of ['cali1', 'cali2', 'caliother', 'tap0', 'eth0']) k.addLink(l);
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1'), wep('b', 'cali2'), wep('t', 'tap0')]);
  const s = await rec.apply({ inSync: true });
  assert.equal(configured(k, 'cali1'), true);
  assert.equal(configured(k, 'cali2'), true);
  assert.equal(k.sysctl('net/ipv4/neigh/cali1/proxy_delay'), '0');
  assert.equal(k.sysctl('net/ipv4/conf/caliother/proxy_arp'), '0', 'no endpoint: untouched');
  assert.equal(k.sysctl('net/ipv4/conf/tap0/proxy_arp'), '0', 'not our prefix: untouched');
  for (const [p, v] of GLOBAL_SYSCTLS) assert.equal(k.sysctl(p), v);
  assert.equal(s.ifaces, 2);
  assert.equal(s.sysctlWrites, 2 * 5 + 2);
  assert.equal(s.drift, 0);
  assert.equal(s.failed, 0);
  assert.equal(s.processesSpawned, 0);
});

test('ifaces: a custom prefix', async () => {
  const k = new FakeKernel();
  k.addLink('tap0');
  k.addLink('cali1');
  const rec = new IfaceReconciler({ kernel: k, prefix: 'tap' });
  rec.setDesired([wep('t', 'tap0'), wep('a', 'cali1')]);
  await rec.apply({ inSync: false });
  assert.equal(configured(k, 'tap0'), true);
  assert.equal(configured(k, 'cali1'), false);
});

test('ifaces: applying twice does nothing the second time; after markDirty it only reads', async () => {
  const k = new FakeKernel();
  k.addLink('cali1');
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1')]);
  await rec.apply({ inSync: true });
  const again = await rec.apply({ inSync: true });
  assert.equal(again.sysctlReads, 0);
  assert.equal(again.sysctlWrites, 0);
  assert.equal(again.readLinks, false);
  rec.markDirty('resync');
  const check = await rec.apply({ inSync: true });
  assert.equal(check.readLinks, true);
  assert.equal(check.sysctlReads, 5 + 2);
  assert.equal(check.sysctlWrites, 0);
  assert.equal(check.changed, 0);
});

test('ifaces: drift is detected and repaired on the next dirty apply', async () => {
  const k = new FakeKernel();
  k.addLink('cali1');
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1')]);
  await rec.apply({ inSync: true });
  k.setSysctl('net/ipv4/conf/cali1/proxy_arp', '0');
  k.setSysctl('net/ipv4/ip_forward', '0');
  assert.equal((await rec.apply({ inSync: true })).sysctlReads, 0, 'clean: not re-read');
  rec.markDirty('periodic resync');
  const s = await rec.apply({ inSync: true });
  assert.equal(s.drift, 2);
  assert.equal(s.sysctlWrites, 2);
  assert.equal(k.sysctl('net/ipv4/conf/cali1/proxy_arp'), '1');
  assert.equal(k.sysctl('net/ipv4/ip_forward'), '1');
});

test('ifaces: an interface that appears later, or is re-created, is configured (not counted as drift)', async () => {
  const k = new FakeKernel();
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1')]);
  const s1 = await rec.apply({ inSync: true });
  assert.equal(s1.missing, 1);
  assert.equal(rec.linkUp('cali1'), undefined);
  k.addLink('cali1');
  const s2 = await rec.apply({ inSync: true }); // a missing interface makes the next apply look again
  assert.equal(s2.ifaces, 1);
  assert.equal(configured(k, 'cali1'), true);
  k.removeLink('cali1');
  k.addLink('cali1'); // fresh sysctls, new ifindex
  rec.markDirty('link added');
  const s3 = await rec.apply({ inSync: true });
  assert.equal(s3.drift, 0);
  assert.equal(s3.sysctlWrites, 5);
  assert.equal(configured(k, 'cali1'), true);
});

test('ifaces: down interfaces are configured and reported, never brought up', async () => {
  const k = new FakeKernel();
  k.addLink('cali1', { adminUp: false });
  k.addLink('cali2', { adminUp: true, operState: 'LOWERLAYERDOWN' });
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1'), wep('b', 'cali2'), wep('c', 'cali3')]);
  const s = await rec.apply({ inSync: true });
  assert.equal(s.down, 2);
  assert.equal(s.missing, 1);
  assert.equal(configured(k, 'cali1'), true);
  assert.deepEqual(
    rec.status().map((x) => [x.iface, x.present, x.operState, x.up, x.configured]),
    [
      ['cali1', true, 'DOWN', false, true],
      ['cali2', true, 'LOWERLAYERDOWN', false, true],
      ['cali3', false, 'ABSENT', false, false],
    ],
  );
  assert.equal((await k.listLinks()).find((l) => l.name === 'cali1')?.adminUp, false);
  assert.equal(rec.linkUp('cali2'), false);
});

test('ifaces: without IPv6 in the kernel the IPv6 sysctls are skipped, not failed', async () => {
  const k = new FakeKernel({ ipv6: false });
  k.addLink('cali1');
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1')]);
  const s = await rec.apply({ inSync: true });
  assert.equal(s.failed, 0);
  assert.equal(s.absent, 3, 'all.forwarding, proxy_ndp and forwarding for IPv6');
  assert.equal(k.sysctl('net/ipv4/conf/cali1/proxy_arp'), '1');
  assert.equal((await rec.apply({ inSync: true })).sysctlReads, 0);
});

test('ifaces: a sysctl that cannot be written is reported and retried on the next apply', async () => {
  const k = new FakeKernel();
  k.addLink('cali1');
  const rec = new IfaceReconciler({ kernel: k });
  rec.setDesired([wep('a', 'cali1')]);
  const real = k.writeSysctl.bind(k);
  let fail = true;
  k.writeSysctl = (p: string, v: string) => {
    if (fail && p.endsWith('/proxy_arp')) throw new Error('EPERM');
    real(p, v);
  };
  const s = await rec.apply({ inSync: true });
  assert.equal(s.failed, 1);
  assert.match(s.errors[0], /proxy_arp: EPERM/);
  fail = false;
  const retry = await rec.apply({ inSync: true });
  assert.equal(retry.failed, 0);
  assert.equal(configured(k, 'cali1'), true);
});
