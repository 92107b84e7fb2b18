/**
 * What keeps an apply after a small change small: the calculation keeps the objects of unchanged
 * policies and endpoints (the ACL compile cache keys on them), and the agent re-reads the ACL
 * dataplane only on its own, slower refresh (iptablesRefreshInterval), not on every route refresh.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Calculator } from '../../src/agent/calculation.ts';
import { NodeAgent, type AgentParts } from '../../src/agent/agent.ts';
import { logger } from '../../src/log.ts';
import type { DataplaneModel } from '../../src/agent/model.ts';

const P = '/calico/resources/v3/projectcalico.org/';
const wep = (name: string, ip: string, labels: Record<string, string>) => ({
  key: `${P}workloadendpoints/demo/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'WorkloadEndpoint', metadata: { name, namespace: 'demo', labels }, spec: { node: 'h1', interfaceName: `cali${name}`, ipNetworks: [ip], profiles: ['open'] } }),
});
const gnp = (name: string, selector: string, port: number) => ({
  key: `${P}globalnetworkpolicies/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkPolicy', metadata: { name }, spec: { selector, ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [port] } }] } }),
});
const open = { key: `${P}profiles/open`, value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'Profile', metadata: { name: 'open' }, spec: { ingress: [{ action: 'Allow' }] } }) };

test('calculation: unchanged policies and endpoints keep their objects across a change elsewhere', () => {
  const c = new Calculator({ hostname: 'h1' });
  for (const kv of [open, gnp('default.web', "app == 'web'", 80), gnp('default.db', "app == 'db'", 5432), wep('a', '10.0.0.1', { app: 'web' }), wep('b', '10.0.0.2', { app: 'db' })]) c.onUpdate(kv);
  const m1 = c.model();
  // A policy change recompiles that policy and re-matches every endpoint...
  c.onUpdate(gnp('default.db', "app == 'db'", 5433));
  const m2 = c.model();
  assert.equal(m2.policies.get('gnp/default.web'), m1.policies.get('gnp/default.web'), 'unchanged policy: same object');
  assert.notEqual(m2.policies.get('gnp/default.db'), m1.policies.get('gnp/default.db'));
  assert.equal(m2.policies.get('pro/open'), m1.policies.get('pro/open'));
  // ...but endpoints whose result is the same keep their objects.
  assert.equal(m2.endpoints.get('wep/demo/a'), m1.endpoints.get('wep/demo/a'));
  assert.equal(m2.endpoints.get('wep/demo/b'), m1.endpoints.get('wep/demo/b'));
  // A new endpoint leaves the others alone.
  c.onUpdate(wep('c', '10.0.0.3', { app: 'web' }));
  const m3 = c.model();
  assert.equal(m3.endpoints.get('wep/demo/a'), m1.endpoints.get('wep/demo/a'));
  assert.equal(m3.policies.get('gnp/default.db'), m2.policies.get('gnp/default.db'));
  // A policy change that does alter who it applies to gives new endpoint objects.
  c.onUpdate(gnp('default.web', "app == 'none'", 80));
  const m4 = c.model();
  assert.notEqual(m4.endpoints.get('wep/demo/a'), m3.endpoints.get('wep/demo/a'));
  assert.deepEqual(m4.endpoints.get('wep/demo/a')?.ingress, { tiers: [], profiles: ['pro/open'] });
});

function fakeParts(model: DataplaneModel) {
  const counts = { readBack: 0, aclApply: 0, routesDirty: 0, ifacesDirty: 0 };
  const reconciler = (k: 'routesDirty' | 'ifacesDirty') => ({
    setDesired: () => {},
    markDirty: () => void counts[k]++,
    apply: async () => ({ total: 0, changed: 0 }),
  });
  const parts: AgentParts = {
    calc: { onUpdate: () => {}, model: () => model },
    acl: {
      name: 'fake',
      apply: async () => {
        counts.aclApply++;
        return { changed: false, rulesWritten: 0, rulesTotal: 0, setsWritten: 0, durationMs: 0 };
      },
      readBack: async () => void counts.readBack++,
    },
    ifaces: reconciler('ifacesDirty'),
    routes: reconciler('routesDirty'),
    linkUp: () => true,
  };
  return { parts, counts };
}

test('agent: the route refresh re-reads routes and interfaces only; the ACL refresh re-reads the ACLs', async () => {
  const c = new Calculator({ hostname: 'h1' });
  const { parts, counts } = fakeParts(c.model());
  const agent = new NodeAgent(parts, logger('test'), {}, { minIntervalMs: 1 });
  agent.onSyncStatus('InSync');
  await agent.whenIdle();
  assert.equal(counts.readBack, 0, 'the first apply reads back inside acl.apply, not via readBack()');
  agent.periodicResync();
  await agent.whenIdle();
  assert.deepEqual([counts.readBack, counts.routesDirty, counts.ifacesDirty], [0, 1, 1]);
  agent.aclResync();
  await agent.whenIdle();
  assert.deepEqual([counts.readBack, counts.routesDirty, counts.ifacesDirty], [1, 1, 1]);
  assert.equal(counts.aclApply, 3);
  agent.stop();
});
