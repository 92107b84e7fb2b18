/**
 * The calculation: Calico's policy semantics from datastore keys and values to the compiled
 * model, and independence from update order (property test with shuffled, replayed streams).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Calculator } from '../../src/agent/calculation.ts';
import { evaluateEndpoint } from '../../src/policy/evaluate.ts';
import { explainFlow } from '../../src/policy/explain.ts';
import type { DataplaneModel } from '../../src/agent/model.ts';

const P = '/calico/resources/v3/projectcalico.org/';
type Kv = { key: string; value: string };

const wep = (name: string, node: string, ip: string, labels: Record<string, string>, profiles: string[] = [], ns = 'demo'): Kv => ({
  key: `${P}workloadendpoints/${ns}/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'WorkloadEndpoint', metadata: { name, namespace: ns, labels }, spec: { node, interfaceName: `cali${name}`, ipNetworks: [ip], profiles } }),
});
const gnp = (name: string, spec: Record<string, unknown>): Kv => ({
  key: `${P}globalnetworkpolicies/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkPolicy', metadata: { name }, spec }),
});
const np = (ns: string, name: string, spec: Record<string, unknown>): Kv => ({
  key: `${P}networkpolicies/${ns}/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec }),
});
const tier = (name: string, order?: number): Kv => ({
  key: `${P}tiers/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'Tier', metadata: { name }, spec: order === undefined ? {} : { order } }),
});
const profile = (name: string, spec: Record<string, unknown>): Kv => ({
  key: `${P}profiles/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'Profile', metadata: { name }, spec }),
});

function model(host: string, kvs: readonly Kv[]): DataplaneModel {
  const c = new Calculator({ hostname: host });
  for (const kv of kvs) c.onUpdate(kv);
  return c.model();
}

const tcp = (src: string, dst: string, dstPort: number) => ({ src, dst, protocol: 'tcp' as const, dstPort });

test('calc: only local endpoints; tiers by order then policies by order and name', () => {
  const m = model('h1', [
    wep('a', 'h1', '10.0.0.1', { app: 'web' }),
    wep('b', 'h2', '10.0.0.2', { app: 'web' }),
    tier('sec', 10),
    tier('late'),
    gnp('default.z', { selector: "app == 'web'", order: 1, ingress: [{ action: 'Allow' }] }),
    gnp('default.a', { selector: "app == 'web'", order: 1, ingress: [{ action: 'Allow' }] }),
    gnp('default.first', { selector: "app == 'web'", order: 0.5, ingress: [{ action: 'Allow' }] }),
    gnp('sec.x', { tier: 'sec', selector: 'all()', ingress: [{ action: 'Pass' }] }),
    gnp('late.y', { tier: 'late', selector: 'all()', ingress: [{ action: 'Allow' }] }),
    gnp('default.eg', { selector: 'all()', types: ['Egress'], egress: [{ action: 'Allow' }] }),
  ]);
  assert.deepEqual([...m.endpoints.keys()], ['wep/demo/a']);
  const ep = m.endpoints.get('wep/demo/a')!;
  assert.deepEqual(ep.ingress.tiers.map((t) => [t.tier, t.policies]), [
    ['sec', ['gnp/sec.x']],
    ['default', ['gnp/default.first', 'gnp/default.a', 'gnp/default.z']],
    ['late', ['gnp/late.y']],
  ]);
  assert.deepEqual(ep.egress.tiers.map((t) => t.policies), [['gnp/default.eg']]);
  assert.equal(ep.labels['projectcalico.org/namespace'], 'demo');
});

test('calc + evaluate: Pass goes to the next tier, end of tier denies, profiles only when no tier applies or all passed', () => {
  const base = [
    wep('a', 'h1', '10.0.0.1', { app: 'web' }, ['p']),
    wep('c', 'h2', '10.0.0.3', { app: 'client' }),
    profile('p', { ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [22] } }] }),
    tier('sec', 10),
  ];
  // No policy: the profile decides.
  let m = model('h1', base);
  assert.equal(evaluateEndpoint(m, 'wep/demo/a', 'ingress', tcp('10.0.0.3', '10.0.0.1', 22)).verdict, 'allow');
  assert.equal(evaluateEndpoint(m, 'wep/demo/a', 'ingress', tcp('10.0.0.3', '10.0.0.1', 80)).verdict, 'deny');
  // A tier that passes port 80 and the default tier allowing 80.
  const pass = gnp('sec.pass', { tier: 'sec', selector: 'all()', ingress: [{ action: 'Pass', protocol: 'TCP', destination: { ports: [80] } }] });
  const allow80 = gnp('default.allow80', { selector: "app == 'web'", ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "app == 'client'" }, destination: { ports: [80] } }] });
  m = model('h1', [...base, pass, allow80]);
  const r80 = evaluateEndpoint(m, 'wep/demo/a', 'ingress', tcp('10.0.0.3', '10.0.0.1', 80));
  assert.equal(r80.verdict, 'allow');
  assert.deepEqual(r80.steps.map((s) => s.action), ['pass', 'allow']);
  // 22 is not passed by sec: end of tier, the profile is never reached.
  const r22 = evaluateEndpoint(m, 'wep/demo/a', 'ingress', tcp('10.0.0.3', '10.0.0.1', 22));
  assert.equal(r22.verdict, 'deny');
  assert.equal(r22.steps.at(-1)!.action, 'end-of-tier');
  // Only the passing tier: passing the last tier falls through to the profile.
  m = model('h1', [...base, pass]);
  assert.equal(evaluateEndpoint(m, 'wep/demo/a', 'ingress', tcp('10.0.0.3', '10.0.0.1', 80)).verdict, 'deny');
  // The rule selector became an IP set holding the remote client's address.
  m = model('h1', [...base, allow80]);
  const sets = [...m.ipSets.values()];
  assert.equal(sets.length, 1);
  assert.deepEqual(sets[0]!.ipv4, ['10.0.0.3/32']);
});

test('calc: namespaced policies apply in their namespace and their rule selectors stay there', () => {
  const kvs = [
    wep('a', 'h1', '10.0.0.1', { app: 'db' }, [], 'ns1'),
    wep('b', 'h1', '10.0.0.2', { app: 'db' }, [], 'ns2'),
    wep('c1', 'h2', '10.0.0.3', { role: 'fe' }, [], 'ns1'),
    wep('c2', 'h2', '10.0.0.4', { role: 'fe' }, [], 'ns2'),
    np('ns1', 'db', { selector: "app == 'db'", ingress: [{ action: 'Allow', source: { selector: "role == 'fe'" } }] }),
  ];
  const m = model('h1', kvs);
  assert.equal(m.endpoints.get('wep/ns1/a')!.ingress.tiers.length, 1);
  assert.equal(m.endpoints.get('wep/ns2/b')!.ingress.tiers.length, 0, 'other namespace untouched');
  assert.deepEqual([...m.ipSets.values()][0]!.ipv4, ['10.0.0.3/32'], 'only ns1 front ends');
});

test('calc: IP sets follow remote endpoints appearing, changing labels and going', () => {
  const c = new Calculator({ hostname: 'h1' });
  for (const kv of [wep('a', 'h1', '10.0.0.1', { app: 'web' }), gnp('default.p', { selector: "app == 'web'", ingress: [{ action: 'Allow', source: { selector: "role == 'x'" } }] })]) c.onUpdate(kv);
  const members = () => [...c.model().ipSets.values()][0]!.ipv4;
  assert.deepEqual(members(), []);
  c.onUpdate(wep('r1', 'h9', '10.9.0.1', { role: 'x' }));
  c.onUpdate(wep('r2', 'h9', '10.9.0.2', { role: 'y' }));
  assert.deepEqual(members(), ['10.9.0.1/32']);
  c.onUpdate(wep('r2', 'h9', '10.9.0.2', { role: 'x' }));
  assert.deepEqual(members(), ['10.9.0.1/32', '10.9.0.2/32']);
  c.onUpdate({ key: wep('r1', 'h9', '', {}).key, value: null });
  assert.deepEqual(members(), ['10.9.0.2/32']);
});

test('calc: bad values are reported with their key and skipped; the rest is computed', () => {
  const bad = { key: `${P}globalnetworkpolicies/default.bad`, value: '{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"default.bad"},"spec":{"selector":"a ==="}}' };
  const garbage = { key: `${P}profiles/junk`, value: '{not json' };
  const m = model('h1', [wep('a', 'h1', '10.0.0.1', {}), bad, garbage]);
  assert.equal(m.endpoints.size, 1);
  assert.deepEqual(m.problems.map((p) => p.key), [bad.key, garbage.key].sort());
  assert.match(m.problems.find((p) => p.key === bad.key)!.reason, /selector/);
  // a later good value clears the problem
  const c = new Calculator({ hostname: 'h1' });
  c.onUpdate(bad);
  c.onUpdate(gnp('default.bad', { selector: 'all()' }));
  assert.deepEqual(c.model().problems, []);
});

test('calc: the model depends only on the final state, never on update order (property)', () => {
  const pool: Kv[] = [
    wep('a', 'h1', '10.0.0.1', { app: 'web', tenant: 't1' }, ['p1']),
    wep('b', 'h1', '10.0.0.2', { app: 'db', tenant: 't1' }, ['p2']),
    wep('c', 'h2', '10.0.0.3', { app: 'web', tenant: 't2' }, ['p1']),
    wep('d', 'h2', 'fd00::4', { app: 'db', tenant: 't2' }, ['p2']),
    profile('p1', { labelsToApply: { tenant: 'x', owner: 'p1' }, ingress: [{ action: 'Allow', source: { selector: "owner == 'p1'" } }], egress: [{ action: 'Allow' }] }),
    profile('p2', { ingress: [{ action: 'Deny' }] }),
    tier('sec', 5),
    gnp('sec.s', { tier: 'sec', selector: "app == 'db'", ingress: [{ action: 'Pass', source: { selector: "app == 'web'" } }] }),
    gnp('default.g', { selector: 'all()', order: 3, ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [80, '8000:8080'] } }] }),
    np('demo', 'n', { selector: "tenant == 't1'", types: ['Ingress', 'Egress'], egress: [{ action: 'Allow', destination: { selector: "app == 'db'" } }] }),
    { key: `${P}globalnetworksets/gs`, value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkSet', metadata: { name: 'gs', labels: { app: 'db' } }, spec: { nets: ['192.0.2.0/24'] } }) },
    { key: `${P}ippools/p`, value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'p' }, spec: { cidr: '10.0.0.0/16', natOutgoing: true } }) },
  ];
  const variant = (kv: Kv): Kv => ({ key: kv.key, value: kv.value.replace('"app":"web"', '"app":"other"') });
  fc.assert(
    fc.property(
      fc.subarray(pool.map((_, i) => i)),
      fc.array(fc.record({ i: fc.nat(pool.length - 1), op: fc.constantFrom('variant', 'delete', 'garbage') }), { maxLength: 12 }),
      fc.infiniteStream(fc.nat()),
      (keep, noise, rand) => {
        const final = keep.map((i) => pool[i]!);
        // Stream A: the final state in order. Stream B: noise (writes, deletes, garbage) for
        // any key, then the final state shuffled, then deletes for keys not in the final state.
        const a = new Calculator({ hostname: 'h1' });
        for (const kv of final) a.onUpdate(kv);
        const b = new Calculator({ hostname: 'h1' });
        for (const n of noise) {
          const kv = pool[n.i]!;
          b.onUpdate(n.op === 'variant' ? variant(kv) : n.op === 'delete' ? { key: kv.key, value: null } : { key: kv.key, value: '{' });
          if (rand.next().value % 2 === 0) b.model(); // interleave recomputes
        }
        const shuffled = [...final].sort(() => (rand.next().value % 3) - 1);
        for (const kv of shuffled) b.onUpdate(kv);
        for (const kv of pool) if (!final.includes(kv)) b.onUpdate({ key: kv.key, value: null });
        assert.deepEqual(b.model(), a.model());
      },
    ),
    { numRuns: 150 },
  );
});

test('explain: both ends, from resources alone', () => {
  const kvs = [
    wep('a', 'h1', '10.0.0.1', { app: 'client' }),
    wep('b', 'h2', '10.0.0.2', { app: 'web' }),
    gnp('default.web', { selector: "app == 'web'", ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [443] } }] }),
    gnp('default.out', { selector: "app == 'client'", types: ['Egress'], egress: [{ action: 'Allow' }] }),
  ];
  const ok = explainFlow(kvs, { src: 'demo/a', dst: 'demo/b', protocol: 'tcp', dstPort: 443 });
  assert.equal(ok.verdict, 'allow');
  assert.equal(ok.egress?.node, 'h1');
  assert.equal(ok.ingress?.node, 'h2');
  const no = explainFlow(kvs, { src: '10.0.0.1', dst: '10.0.0.2', protocol: 'tcp', dstPort: 80 });
  assert.equal(no.verdict, 'deny');
  assert.equal(no.egress?.verdict, 'allow');
  assert.equal(no.ingress?.steps.at(-1)?.action, 'end-of-tier');
  const ext = explainFlow(kvs, { src: 'demo/a', dst: '198.51.100.7', protocol: 'udp', dstPort: 53 });
  assert.equal(ext.verdict, 'allow');
  assert.equal(ext.ingress, undefined);
});
