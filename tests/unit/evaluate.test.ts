/**
 * The reference evaluator (src/policy/evaluate.ts): Calico's tier / policy / rule / profile
 * semantics on hand-built models, rule matching field by field, and a check through the real
 * calculation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Calculator } from '../../src/agent/calculation.ts';
import type { CompiledPolicy, CompiledRule, DataplaneModel, EndpointPolicies, IpSet, PacketSpec, RuleMatch, TierRef } from '../../src/agent/model.ts';
import { evaluateEndpoint } from '../../src/policy/evaluate.ts';
import { RoutecatError } from '../../src/errors.ts';
import { compileAclModel, MARK_PASS } from '../../src/agent/dataplane/acl.ts';

const rule = (action: CompiledRule['action'], match: RuleMatch = {}, index = 0, never?: boolean): CompiledRule => (never ? { action, match, index, never } : { action, match, index });
const pol = (id: string, ingress: CompiledRule[], egress: CompiledRule[] = []): CompiledPolicy => ({
  id,
  kind: id.startsWith('pro/') ? 'Profile' : 'GlobalNetworkPolicy',
  name: id.split('/').at(-1) ?? id,
  ...(id.startsWith('pro/') ? {} : { tier: 'default' }),
  ingress: ingress.map((r, i) => ({ ...r, index: i })),
  egress: egress.map((r, i) => ({ ...r, index: i })),
});
const tierRef = (tier: string, policies: string[]): TierRef => ({ tier, policies });

function modelWith(ingress: EndpointPolicies, policies: CompiledPolicy[], ipSets: IpSet[] = []): DataplaneModel {
  return {
    hostname: 'h1',
    endpoints: new Map([
      [
        'wep/ns/a',
        {
          id: 'wep/ns/a',
          type: 'workload',
          name: 'a',
          namespace: 'ns',
          iface: 'calia',
          ipv4Nets: ['10.0.0.1/32'],
          ipv6Nets: ['fd00::1/128'],
          allowSpoofedSourcePrefixes: [],
          labels: {},
          ingress,
          egress: { tiers: [], profiles: [] },
        },
      ],
    ]),
    policies: new Map(policies.map((p) => [p.id, p])),
    ipSets: new Map(ipSets.map((s) => [s.id, s])),
    pools: [],
    failsafeInbound: [],
    failsafeOutbound: [],
    problems: [],
  };
}

const pkt = (over: Partial<PacketSpec> = {}): PacketSpec => ({ src: '10.9.0.1', dst: '10.0.0.1', protocol: 'tcp', srcPort: 40000, dstPort: 80, ...over });
const run = (m: DataplaneModel, p: PacketSpec = pkt()) => evaluateEndpoint(m, 'wep/ns/a', 'ingress', p);
const actions = (m: DataplaneModel, p?: PacketSpec) => run(m, p).steps.map((s) => `${s.policy ?? s.tier ?? ''}:${s.action}`);

test('no tiers and no profiles: deny', () => {
  const r = run(modelWith({ tiers: [], profiles: [] }, []));
  assert.equal(r.verdict, 'deny');
  assert.deepEqual(r.steps.map((s) => s.action), ['default-deny']);
});

test('tiers in order; the first matching allow or deny decides; later tiers are not reached', () => {
  const m = modelWith({ tiers: [tierRef('t1', ['gnp/deny80']), tierRef('t2', ['gnp/allow'])], profiles: [] }, [
    pol('gnp/deny80', [rule('deny', { protocol: 'tcp', dstPorts: [{ first: 80, last: 80 }] }), rule('allow', { protocol: 'tcp' })]),
    pol('gnp/allow', [rule('allow')]),
  ]);
  assert.equal(run(m).verdict, 'deny');
  assert.deepEqual(run(m).steps.map((s) => [s.tier, s.policy, s.ruleIndex, s.action]), [['t1', 'gnp/deny80', 0, 'deny']]);
  assert.equal(run(m, pkt({ dstPort: 81 })).verdict, 'allow');
  assert.deepEqual(actions(m, pkt({ dstPort: 81 })), ['gnp/deny80:allow']);
});

test('policies in a tier in order, then end of tier denies once any policy applies', () => {
  const m = modelWith({ tiers: [tierRef('default', ['gnp/a', 'gnp/b'])], profiles: ['pro/open'] }, [
    pol('gnp/a', [rule('allow', { protocol: 'udp' })]),
    pol('gnp/b', [rule('allow', { dstPorts: [{ first: 443, last: 443 }], protocol: 'tcp' })]),
    pol('pro/open', [rule('allow')]),
  ]);
  const r = run(m);
  assert.equal(r.verdict, 'deny', 'the profile is not reached: end of tier');
  assert.deepEqual(r.steps.map((s) => s.action), ['next', 'next', 'end-of-tier']);
  assert.equal(run(m, pkt({ dstPort: 443 })).verdict, 'allow');
});

test('pass skips the rest of the tier to the next one; passing the last tier reaches the profiles', () => {
  const m = modelWith({ tiers: [tierRef('sec', ['gnp/pass', 'gnp/deny-all']), tierRef('default', ['gnp/web'])], profiles: ['pro/p'] }, [
    pol('gnp/pass', [rule('pass', { dstPorts: [{ first: 80, last: 80 }], protocol: 'tcp' })]),
    pol('gnp/deny-all', [rule('deny')]),
    pol('gnp/web', [rule('pass', { dstPorts: [{ first: 80, last: 80 }], protocol: 'tcp' })]),
    pol('pro/p', [rule('deny', { protocol: 'udp' }), rule('allow')]),
  ]);
  const r = run(m);
  assert.equal(r.verdict, 'allow');
  assert.deepEqual(actions(m), ['gnp/pass:pass', 'gnp/web:pass', 'pro/p:allow']);
  assert.equal(run(m, pkt({ dstPort: 22 })).verdict, 'deny', 'not passed: the sec tier denies');
  assert.deepEqual(actions(m, pkt({ dstPort: 22 })), ['gnp/pass:next', 'gnp/deny-all:deny']);
});

test('log records and carries on', () => {
  const m = modelWith({ tiers: [tierRef('default', ['gnp/l'])], profiles: [] }, [pol('gnp/l', [rule('log'), rule('log', { protocol: 'udp' }), rule('allow')])]);
  assert.deepEqual(actions(m), ['gnp/l:log', 'gnp/l:allow']);
  assert.equal(run(m).verdict, 'allow');
});

test('profiles when no tier applies: first matching allow or deny; nothing matched denies', () => {
  const m = modelWith({ tiers: [], profiles: ['pro/a', 'pro/b'] }, [pol('pro/a', [rule('deny', { protocol: 'udp' })]), pol('pro/b', [rule('allow', { protocol: 'tcp' })])]);
  assert.equal(run(m).verdict, 'allow');
  assert.deepEqual(actions(m), ['pro/a:next', 'pro/b:allow']);
  assert.equal(run(m, pkt({ protocol: 'udp' })).verdict, 'deny');
  assert.equal(run(m, pkt({ protocol: 'sctp' })).verdict, 'deny');
  assert.equal(run(m, pkt({ protocol: 'sctp' })).steps.at(-1)?.action, 'default-deny');
});

test('matching: nets by CIDR containment, IP sets (every listed set), not-sets, IPv6, ipVersion', () => {
  const sets: IpSet[] = [
    { id: 's:web', source: 'app == "web"', ipv4: ['10.9.0.0/24', '10.8.0.5/32'], ipv6: ['fd00:9::/64'] },
    { id: 's:prod', source: 'env == "prod"', ipv4: ['10.9.0.1/32'], ipv6: [] },
    { id: 's:bad', source: 'bad', ipv4: ['10.9.0.7/32'], ipv6: [] },
  ];
  const allowIf = (match: RuleMatch) => modelWith({ tiers: [tierRef('default', ['gnp/x'])], profiles: [] }, [pol('gnp/x', [rule('allow', match)])], sets);
  const v = (match: RuleMatch, p?: PacketSpec) => run(allowIf(match), p).verdict;
  assert.equal(v({ srcNets: ['10.9.0.0/16'] }), 'allow');
  assert.equal(v({ srcNets: ['10.10.0.0/16', '10.9.0.1/32'] }), 'allow', 'any of the nets');
  assert.equal(v({ srcNets: ['10.10.0.0/16'] }), 'deny');
  assert.equal(v({ notSrcNets: ['10.9.0.0/24'] }), 'deny');
  assert.equal(v({ dstNets: ['10.0.0.0/8'], notDstNets: ['10.0.0.2/32'] }), 'allow');
  assert.equal(v({ srcIpSets: ['s:web'] }), 'allow');
  assert.equal(v({ srcIpSets: ['s:web', 's:prod'] }), 'allow', 'in both sets');
  assert.equal(v({ srcIpSets: ['s:web', 's:prod'] }, pkt({ src: '10.9.0.2' })), 'deny', 'in one set only');
  assert.equal(v({ srcIpSets: ['s:missing'] }), 'deny', 'a set not in the model is empty');
  assert.equal(v({ notSrcIpSets: ['s:bad'] }), 'allow');
  assert.equal(v({ notSrcIpSets: ['s:bad'] }, pkt({ src: '10.9.0.7' })), 'deny');
  assert.equal(v({ dstIpSets: ['s:web'] }), 'deny');
  const v6 = pkt({ src: 'fd00:9::1234', dst: 'fd00::1' });
  assert.equal(v({ srcIpSets: ['s:web'] }, v6), 'allow');
  assert.equal(v({ srcNets: ['10.9.0.0/16'] }, v6), 'deny', 'IPv4 nets never hold IPv6 addresses');
  assert.equal(v({ ipVersion: 4 }, v6), 'deny');
  assert.equal(v({ ipVersion: 6 }, v6), 'allow');
});

test('matching: protocols by name or number, ports and ranges, unspecified ports, ICMP type and code', () => {
  const allowIf = (match: RuleMatch) => modelWith({ tiers: [tierRef('default', ['gnp/x'])], profiles: [] }, [pol('gnp/x', [rule('allow', match)])]);
  const v = (match: RuleMatch, p?: PacketSpec) => run(allowIf(match), p).verdict;
  assert.equal(v({ protocol: 6 }), 'allow', 'tcp is protocol 6');
  assert.equal(v({ protocol: 'udp' }), 'deny');
  assert.equal(v({ notProtocol: 'tcp' }), 'deny');
  assert.equal(v({ notProtocol: 17 }), 'allow');
  assert.equal(v({ protocol: 47 }, pkt({ protocol: 47, srcPort: undefined, dstPort: undefined })), 'allow');
  assert.equal(v({ protocol: 'tcp', dstPorts: [{ first: 1, last: 79 }, { first: 80, last: 90 }] }), 'allow');
  assert.equal(v({ protocol: 'tcp', dstPorts: [{ first: 81, last: 90 }] }), 'deny');
  assert.equal(v({ protocol: 'tcp', notDstPorts: [{ first: 80, last: 80 }] }), 'deny');
  assert.equal(v({ protocol: 'tcp', srcPorts: [{ first: 32768, last: 60999 }] }), 'allow');
  assert.equal(v({ protocol: 'tcp', srcPorts: [{ first: 32768, last: 60999 }] }, pkt({ srcPort: undefined })), 'deny', 'an unspecified port is in no list');
  assert.equal(v({ protocol: 'tcp', notSrcPorts: [{ first: 1, last: 1023 }] }, pkt({ srcPort: undefined })), 'allow', '... and in no excluded list');
  assert.equal(v({ dstPorts: [{ first: 80, last: 80 }] }, pkt({ protocol: 'icmp', srcPort: undefined, dstPort: undefined })), 'deny', 'ports on a protocol without ports');
  const ping = pkt({ protocol: 'icmp', srcPort: undefined, dstPort: undefined, icmpType: 8, icmpCode: 0 });
  assert.equal(v({ protocol: 'icmp', icmp: { type: 8 } }, ping), 'allow');
  assert.equal(v({ protocol: 'icmp', icmp: { type: 8, code: 1 } }, ping), 'deny');
  assert.equal(v({ protocol: 'icmp', icmp: { type: 0 } }, ping), 'deny');
  assert.equal(v({ protocol: 'icmp', notIcmp: { type: 8 } }, ping), 'deny');
  assert.equal(v({ protocol: 'icmp', notIcmp: { type: 3 } }, ping), 'allow');
  assert.equal(v({ protocol: 'icmp', icmp: { type: 8 } }, pkt({ protocol: 'icmpv6', src: 'fd00::9', dst: 'fd00::1', icmpType: 8 })), 'deny');
  const never = modelWith({ tiers: [tierRef('default', ['gnp/x'])], profiles: [] }, [pol('gnp/x', [rule('allow', {}, 0, true)])]);
  assert.equal(run(never).verdict, 'deny', 'a never rule matches nothing');
});

const P = '/calico/resources/v3/projectcalico.org/';
/** Feeds one resource to the calculator as the syncer would. */
const put = (c: Calculator, plural: string, kind: string, name: string, spec: object, meta: object = {}, ns?: string) =>
  c.onUpdate({
    key: `${P}${plural}/${ns === undefined ? '' : `${ns}/`}${name}`,
    value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind, metadata: { name, ...(ns ? { namespace: ns } : {}), ...meta }, spec }),
  });

test('through the calculation: default deny once a policy applies, profiles otherwise, Pass across tiers', () => {
  const c = new Calculator({ hostname: 'h1' });
  put(c, 'workloadendpoints', 'WorkloadEndpoint', 'web', { node: 'h1', interfaceName: 'caliweb', ipNetworks: ['10.0.0.1'], profiles: ['open'] }, { labels: { app: 'web' } }, 'ns');
  put(c, 'workloadendpoints', 'WorkloadEndpoint', 'cli', { node: 'h2', interfaceName: 'calicli', ipNetworks: ['10.0.0.2'] }, { labels: { app: 'client' } }, 'ns');
  put(c, 'profiles', 'Profile', 'open', { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] });
  const ev = (port: number) => evaluateEndpoint(c.model(), 'wep/ns/web', 'ingress', pkt({ src: '10.0.0.2', dstPort: port }));
  assert.equal(ev(22).verdict, 'allow', 'no policy: the profile allows');
  put(c, 'networkpolicies', 'NetworkPolicy', 'default.web', { selector: "app == 'web'", ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "app == 'client'" }, destination: { ports: [80] } }] }, {}, 'ns');
  assert.equal(ev(80).verdict, 'allow');
  assert.equal(ev(22).verdict, 'deny', 'a policy applies: default deny, the profile is not reached');
  assert.equal(evaluateEndpoint(c.model(), 'wep/ns/web', 'egress', pkt({ src: '10.0.0.1', dst: '10.0.0.2' })).verdict, 'allow', 'no egress policy: profile');
  put(c, 'tiers', 'Tier', 'sec', { order: 10 });
  put(c, 'globalnetworkpolicies', 'GlobalNetworkPolicy', 'sec.p', { tier: 'sec', selector: 'all()', ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [80] } }, { action: 'Pass' }] });
  assert.equal(ev(80).verdict, 'deny', 'the earlier tier denies');
  assert.equal(ev(22).verdict, 'deny', 'passed, then the default tier ends');
  assert.deepEqual(ev(22).steps.map((s) => s.action), ['pass', 'next', 'end-of-tier']);
});

test('a tier with defaultAction Pass sends what none of its policies decided on, in the evaluator and in the compiled ACLs', () => {
  const c = new Calculator({ hostname: 'h1' });
  put(c, 'workloadendpoints', 'WorkloadEndpoint', 'web', { node: 'h1', interfaceName: 'caliweb', ipNetworks: ['10.0.0.1'], profiles: ['open'] }, { labels: { app: 'web' } }, 'ns');
  put(c, 'profiles', 'Profile', 'open', { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] });
  put(c, 'tiers', 'Tier', 'sec', { order: 10, defaultAction: 'Pass' });
  put(c, 'globalnetworkpolicies', 'GlobalNetworkPolicy', 'sec.no-telnet', { tier: 'sec', selector: 'all()', ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [23] } }] });
  const ev = (port: number) => evaluateEndpoint(c.model(), 'wep/ns/web', 'ingress', pkt({ src: '10.0.0.2', dstPort: port }));
  assert.deepEqual(c.model().endpoints.get('wep/ns/web')!.ingress.tiers, [{ tier: 'sec', policies: ['gnp/sec.no-telnet'], passAtEnd: true }]);
  assert.equal(ev(23).verdict, 'deny', 'the tier\'s policy still decides what it matches');
  assert.equal(ev(80).verdict, 'allow', 'undecided: passed on to the profile');
  assert.deepEqual(ev(80).steps.map((s) => s.action), ['next', 'end-of-tier', 'allow']);
  const endOfTierDrops = () =>
    compileAclModel(c.model(), { ifacePrefix: 'cali', endpointToHostAction: 'Drop', ipv6: false })
      .chains.filter((ch) => ch.name === 'rc-tw-caliweb')
      .flatMap((ch) => ch.rules)
      .filter((r) => r.match.markNone === MARK_PASS && r.action.kind === 'drop').length;
  assert.equal(endOfTierDrops(), 0, 'no drop at the end of a Pass tier in the kernel rules');
  put(c, 'tiers', 'Tier', 'sec', { order: 10, defaultAction: 'Deny' });
  assert.equal(ev(80).verdict, 'deny', 'with Deny the tier ends the packet');
  assert.equal(endOfTierDrops(), 1, 'and the kernel rules drop at the end of the tier');
});

test('a policy with a serviceAccountSelector applies only to workloads whose service account it selects', () => {
  const c = new Calculator({ hostname: 'h1' });
  const wep = (name: string, sa?: string) =>
    put(c, 'workloadendpoints', 'WorkloadEndpoint', name, { node: 'h1', interfaceName: `cali${name}`, ipNetworks: [`10.0.0.${name.length}`], profiles: ['open'], ...(sa ? { serviceAccountName: sa } : {}) }, { labels: { app: 'web' } }, 'shop');
  wep('a', 'api');
  wep('bb', 'frontend');
  wep('ccc');
  put(c, 'profiles', 'Profile', 'open', { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] });
  put(c, 'profiles', 'Profile', 'ksa.shop.api', { labelsToApply: { 'pcsa.team': 'payments' } });
  put(c, 'globalnetworkpolicies', 'GlobalNetworkPolicy', 'payments-no-80', { selector: "app == 'web'", serviceAccountSelector: "team == 'payments'", ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [80] } }, { action: 'Allow' }] });
  const verdict = (ep: string) => evaluateEndpoint(c.model(), `wep/shop/${ep}`, 'ingress', pkt({ dst: '10.0.0.1', dstPort: 80 })).verdict;
  assert.deepEqual(['a', 'bb', 'ccc'].map(verdict), ['deny', 'allow', 'allow'], 'only the payments service account is selected; no account, no match');
  put(c, 'globalnetworkpolicies', 'GlobalNetworkPolicy', 'payments-no-80', { selector: "app == 'web'", serviceAccountSelector: "projectcalico.org/name == 'frontend'", ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [80] } }, { action: 'Allow' }] });
  assert.deepEqual(['a', 'bb', 'ccc'].map(verdict), ['allow', 'deny', 'allow'], 'by the account\'s name');
});

test('rules match source and destination service accounts by name and by selector, within the policy\'s namespace', () => {
  const c = new Calculator({ hostname: 'h1' });
  const wep = (ns: string, name: string, ip: string, sa?: string) =>
    put(c, 'workloadendpoints', 'WorkloadEndpoint', name, { node: 'h2', interfaceName: `cali${name}`, ipNetworks: [ip], ...(sa ? { serviceAccountName: sa } : {}) }, { labels: { app: 'client' } }, ns);
  put(c, 'workloadendpoints', 'WorkloadEndpoint', 'db', { node: 'h1', interfaceName: 'calidb', ipNetworks: ['10.0.1.1'] }, { labels: { app: 'db' } }, 'shop');
  wep('shop', 'fe', '10.0.2.1', 'frontend');
  wep('shop', 'api', '10.0.2.2', 'api');
  wep('shop', 'anon', '10.0.2.3');
  wep('other', 'fe2', '10.0.2.4', 'frontend');
  put(c, 'profiles', 'Profile', 'ksa.shop.api', { labelsToApply: { 'pcsa.team': 'payments' } });
  put(c, 'networkpolicies', 'NetworkPolicy', 'default.db', {
    selector: "app == 'db'",
    ingress: [
      { action: 'Allow', protocol: 'TCP', source: { serviceAccounts: { names: ['frontend'] } }, destination: { ports: [5432] } },
      { action: 'Allow', protocol: 'TCP', source: { selector: "app == 'client'", serviceAccounts: { selector: "team == 'payments'" } } },
    ],
  }, {}, 'shop');
  const from = (src: string, dstPort = 5432) => evaluateEndpoint(c.model(), 'wep/shop/db', 'ingress', pkt({ src, dst: '10.0.1.1', dstPort })).verdict;
  assert.equal(from('10.0.2.1'), 'allow', 'the frontend account in the namespace');
  assert.equal(from('10.0.2.1', 22), 'deny', 'only to 5432');
  assert.equal(from('10.0.2.2', 22), 'allow', 'the payments-labelled account, any port');
  assert.equal(from('10.0.2.3'), 'deny', 'no account: no match');
  assert.equal(from('10.0.2.4'), 'deny', 'a frontend account in another namespace does not match a namespaced policy');
  assert.deepEqual(c.model().problems, [], 'serviceAccounts rules are no longer reported as unsupported');
  const sets = [...c.model().ipSets.values()].map((s) => [s.source, s.ipv4]);
  assert.ok(sets.some(([src, v4]) => /service accounts frontend/.test(String(src)) && JSON.stringify(v4) === '["10.0.2.1/32"]'), JSON.stringify(sets));
});
