import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { validateResource, validateAll } from '../../src/model/validate.ts';
import { KINDS } from '../../src/model/kinds.ts';
import { ValidationError } from '../../src/errors.ts';

const V = 'projectcalico.org/v3';
type Doc = Record<string, unknown>;

function doc(kind: string, name: string, spec?: unknown, extra: Doc = {}): Doc {
  const d: Doc = { apiVersion: V, kind, metadata: { name, ...((extra.metadata as Doc | undefined) ?? {}) } };
  if (spec !== undefined) d.spec = spec;
  for (const [k, v] of Object.entries(extra)) if (k !== 'metadata') d[k] = v;
  return d;
}

/** Asserts that validation fails on `field` with a reason matching `reason`. */
function rejects(d: unknown, field: string, reason: RegExp): ValidationError {
  let caught: unknown;
  try {
    validateResource(d);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ValidationError, `expected a ValidationError, got ${String(caught)}`);
  assert.equal(caught.field, field, caught.message);
  assert.match(caught.reason, reason, caught.message);
  return caught;
}

function spec(d: Doc): Doc {
  const r = validateResource(d);
  assert.deepEqual(validateResource(r), r, 'normalisation is idempotent');
  return r.spec as Doc;
}

// ---- Good documents for every kind, with defaults -----------------------------------------------

const GOOD: Record<string, Doc> = {
  IPPool: doc('IPPool', 'pool-v4', { cidr: '10.65.0.0/16', natOutgoing: true }),
  BGPConfiguration: doc('BGPConfiguration', 'default', {
    logSeverityScreen: 'Info',
    nodeToNodeMeshEnabled: false,
    asNumber: 64512,
    serviceClusterIPs: [{ cidr: '10.96.0.0/12' }],
    serviceExternalIPs: [{ cidr: '192.0.2.0/24' }],
    listenPort: 179,
    communities: [{ name: 'bgp-large-community', value: '63400:300:100' }],
    prefixAdvertisements: [{ cidr: '172.218.4.0/26', communities: ['bgp-large-community', '63400:120'] }],
    nodeMeshMaxRestartTime: '120s',
    bindMode: 'NodeIP',
    ignoredInterfaces: ['iface-*'],
  }),
  BGPPeer: doc('BGPPeer', 'rack1-tor', { nodeSelector: 'rack == "1"', peerIP: '192.0.2.1:1179', asNumber: '64567', password: { secretKeyRef: { name: 'bgp', key: 'pw' } }, sourceAddress: 'None', keepaliveTime: '30s' }),
  Node: doc('Node', 'node-1', { bgp: { ipv4Address: '10.0.0.1/24', asNumber: 64513, routeReflectorClusterID: '224.0.0.1' }, ipv4VXLANTunnelAddr: '10.65.1.0', orchRefs: [{ nodeName: 'node-1', orchestrator: 'k8s' }], addresses: [{ address: '10.0.0.1', type: 'InternalIP' }] }, { status: { podCIDRs: ['10.65.1.0/24'] } }),
  Profile: doc('Profile', 'kns.dev', { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }], labelsToApply: { 'projectcalico.org/namespace': 'dev' } }),
  GlobalNetworkPolicy: doc('GlobalNetworkPolicy', 'allow-dns', {
    order: 100,
    egress: [{ action: 'Allow', protocol: 'UDP', destination: { selector: 'k8s-app == "kube-dns"', ports: [53, '8000:8080', 'dns'] } }],
  }),
  NetworkPolicy: doc('NetworkPolicy', 'allow-web', { selector: "app == 'web'", ingress: [{ action: 'Allow', protocol: 'TCP', source: { nets: ['10.0.0.0/8'] }, destination: { ports: [80] } }] }, { metadata: { namespace: 'prod' } }),
  Tier: doc('Tier', 'security', { order: 100 }),
  WorkloadEndpoint: doc('WorkloadEndpoint', 'node1-k8s-web--1-eth0', { node: 'node1', orchestrator: 'k8s', pod: 'web-1', endpoint: 'eth0', interfaceName: 'cali0123456789a', ipNetworks: ['10.65.0.5/32'], mac: 'ee:ee:ee:ee:ee:ee', profiles: ['kns.default'], ports: [{ name: 'http', protocol: 'TCP', port: 80 }] }),
  HostEndpoint: doc('HostEndpoint', 'node1-eth0', { node: 'node1', interfaceName: 'eth0', expectedIPs: ['192.0.2.10'], ports: [{ name: 'ssh', protocol: 'TCP', port: 22 }] }),
  GlobalNetworkSet: doc('GlobalNetworkSet', 'blocked', { nets: ['198.51.100.0/24', '203.0.113.7', '2001:db8::/32'] }),
  NetworkSet: doc('NetworkSet', 'partners', { nets: ['192.0.2.0/24'] }, { metadata: { namespace: 'prod' } }),
  FelixConfiguration: doc('FelixConfiguration', 'default', {
    logSeverityScreen: 'Info',
    reportingInterval: '0s',
    routeRefreshInterval: '1m30s',
    iptablesRefreshInterval: '90s',
    ipsetsRefreshInterval: '10s',
    interfacePrefix: 'cali',
    defaultEndpointToHostAction: 'Drop',
    failsafeInboundHostPorts: [{ protocol: 'tcp', port: 22 }, { protocol: 'UDP', port: 68, net: '0.0.0.0/0' }],
    failsafeOutboundHostPorts: [{ protocol: 'TCP', port: 2379 }],
    healthEnabled: true,
    healthHost: 'localhost',
    healthPort: 9099,
    prometheusMetricsEnabled: true,
    prometheusMetricsPort: 9091,
    natOutgoingAddress: '192.0.2.1',
    routeTableRange: { min: 1, max: 250 },
    chainInsertMode: 'Insert',
    iptablesBackend: 'Auto',
    bpfEnabled: false,
    allowVXLANPacketsFromWorkloads: false,
    allowIPIPPacketsFromWorkloads: false,
    deviceRouteProtocol: 80,
    removeExternalRoutes: true,
    routeSource: 'CalicoIPAM',
    endpointReportingEnabled: false,
  }),
  ClusterInformation: doc('ClusterInformation', 'default', { clusterGUID: 'abc', clusterType: 'routecat', calicoVersion: 'v3.30.0', datastoreReady: true, variant: 'Calico' }),
};

test('validate: every kind has a good example that validates and is idempotent', () => {
  for (const k of KINDS) {
    const d = GOOD[k.kind];
    assert.ok(d, `no example for ${k.kind}`);
    const r = validateResource(d);
    assert.equal(r.kind, k.kind);
    assert.deepEqual(validateResource(r), r, `${k.kind} normalisation is idempotent`);
    assert.deepEqual(validateAll(d), []);
    assert.equal(r.metadata.namespace !== undefined, k.namespaced, `${k.kind} namespace presence`);
  }
});

test('validate: IPPool defaults depend on the IP version', () => {
  assert.deepEqual(spec(GOOD.IPPool), {
    cidr: '10.65.0.0/16', natOutgoing: true, blockSize: 26, ipipMode: 'Never', vxlanMode: 'Never', disabled: false,
    disableBGPExport: false, nodeSelector: 'all()', allowedUses: ['Workload', 'Tunnel'], assignmentMode: 'Automatic',
  });
  const v6 = spec(doc('IPPool', 'pool-v6', { cidr: '2001:DB8:0::/48', vxlanMode: 'Always' }));
  assert.equal(v6.blockSize, 122);
  assert.equal(v6.cidr, '2001:db8::/48', 'the CIDR is stored in canonical form');
  assert.equal(spec(doc('IPPool', 'p', { cidr: '10.0.0.0/24', nodeSelector: '' })).nodeSelector, 'all()');
});

test('validate: the input document is not modified', () => {
  const d = structuredClone(GOOD.IPPool);
  validateResource(d);
  assert.deepEqual(d, GOOD.IPPool);
});

test('validate: policy defaults (tier, selector, types computed as Calico does)', () => {
  const gnp = spec(GOOD.GlobalNetworkPolicy);
  assert.equal(gnp.tier, 'default');
  assert.equal(gnp.selector, 'all()');
  assert.deepEqual(gnp.types, ['Egress'], 'egress rules only: Egress');
  assert.deepEqual((gnp.egress as Doc[])[0].destination, { selector: 'k8s-app == "kube-dns"', ports: [53, '8000:8080', 'dns'] });
  const np = validateResource(GOOD.NetworkPolicy);
  assert.equal(np.metadata.namespace, 'prod');
  assert.deepEqual((np.spec as Doc).types, ['Ingress']);
  assert.equal((np.spec as Doc).selector, "app == 'web'", 'selector text is kept as written');
  const both = spec(doc('NetworkPolicy', 'p', { ingress: [{ action: 'Deny' }], egress: [{ action: 'Deny' }] }));
  assert.deepEqual(both.types, ['Ingress', 'Egress']);
  const none = spec(doc('GlobalNetworkPolicy', 'p', {}));
  assert.deepEqual(none.types, ['Ingress'], 'no rules at all: Ingress');
  assert.deepEqual(spec(doc('NetworkPolicy', 'p', { types: ['Egress'] })).types, ['Egress'], 'explicit types are kept');
  const tiered = spec(doc('GlobalNetworkPolicy', 'security.block', { tier: 'security', ingress: [{ action: 'Pass' }] }));
  assert.equal(tiered.tier, 'security');
});

test('validate: rule normalisation (protocol spelling, port forms)', () => {
  const s = spec(doc('GlobalNetworkPolicy', 'p', { ingress: [{ action: 'Allow', protocol: 'tcp', destination: { ports: ['80', '443:443', '1000:2000'] } }, { action: 'Allow', protocol: 'icmpv6', icmp: { type: 128, code: 0 } }, { action: 'Allow', protocol: 17, source: { notPorts: [53] } }] }));
  const rules = s.ingress as Doc[];
  assert.equal(rules[0].protocol, 'TCP');
  assert.deepEqual((rules[0].destination as Doc).ports, [80, 443, '1000:2000']);
  assert.equal(rules[1].protocol, 'ICMPv6');
  assert.equal(rules[2].protocol, 17);
});

test('validate: metadata is kept as given; namespaced kinds default the namespace', () => {
  const meta = { name: 'p', resourceVersion: '42', uid: '0b3f', creationTimestamp: '2024-01-01T00:00:00Z', generation: 3, labels: { 'example.com/team': 'net', app: '' }, annotations: { note: 'anything goes: here!' } };
  const r = validateResource({ apiVersion: V, kind: 'GlobalNetworkSet', metadata: meta, spec: { nets: [] } });
  assert.deepEqual(r.metadata, meta);
  const ns = validateResource(doc('NetworkSet', 'n', { nets: [] }));
  assert.equal(ns.metadata.namespace, 'default');
  assert.equal(validateResource(doc('NetworkSet', 'n', {}, { metadata: { namespace: '' } })).metadata.namespace, 'default');
  assert.equal(validateResource(doc('GlobalNetworkSet', 'n', {}, { metadata: { namespace: '' } })).metadata.namespace, undefined);
  const noSpec = validateResource({ apiVersion: V, kind: 'ClusterInformation', metadata: { name: 'default' } });
  assert.deepEqual(noSpec.spec, {});
});

test('validate: Tier defaults; the default tier has no order', () => {
  assert.deepEqual(spec(GOOD.Tier), { order: 100, defaultAction: 'Deny' });
  assert.deepEqual(spec(doc('Tier', 'default', { order: 5 })), { defaultAction: 'Deny' });
  assert.deepEqual(spec(doc('Tier', 'edge', { defaultAction: 'Pass' })), { defaultAction: 'Pass' });
});

test('validate: BGP kinds keep what is given and inject no runtime defaults', () => {
  const bgp = spec(GOOD.BGPConfiguration);
  assert.equal(bgp.asNumber, 64512);
  assert.deepEqual(spec(doc('BGPConfiguration', 'default', {})), {}, 'no asNumber / mesh defaults stored');
  const peer = spec(GOOD.BGPPeer);
  assert.equal(peer.asNumber, 64567, 'AS number strings become numbers');
  assert.equal(spec(doc('BGPPeer', 'p', { peerIP: '[2001:db8::1]:179', asNumber: '1.10' })).asNumber, 65546, 'asdot form');
  const node = validateResource(GOOD.Node);
  assert.deepEqual(node.status, { podCIDRs: ['10.65.1.0/24'] });
});

// ---- Bad documents ------------------------------------------------------------------------------

test('validate: envelope errors', () => {
  rejects(42, '', /expected a resource object, got number/);
  rejects(null, '', /got null/);
  rejects([], '', /got list/);
  rejects({ kind: 'IPPool', metadata: { name: 'p' }, spec: { cidr: '10.0.0.0/8' } }, 'apiVersion', /missing required field/);
  rejects({ ...GOOD.IPPool, apiVersion: 'projectcalico.org/v2' }, 'apiVersion', /must be projectcalico\.org\/v3/);
  rejects({ ...GOOD.IPPool, kind: 'Frob' }, 'kind', /unknown kind 'Frob'/);
  rejects({ ...GOOD.IPPool, kind: 'ippool' }, 'kind', /did you mean IPPool/);
  rejects({ ...GOOD.IPPool, kind: 7 }, 'kind', /expected string, got number/);
  rejects({ apiVersion: V, kind: 'IPPool', spec: { cidr: '10.0.0.0/8' } }, 'metadata', /missing required field/);
  rejects(doc('IPPool', '', { cidr: '10.0.0.0/8' }), 'metadata.name', /must not be empty/);
  rejects(doc('IPPool', 'Bad_Name', { cidr: '10.0.0.0/8' }), 'metadata.name', /not a valid name/);
  rejects(doc('IPPool', 'x'.repeat(254), { cidr: '10.0.0.0/8' }), 'metadata.name', /longer than 253/);
  rejects({ ...GOOD.IPPool, metadata: { name: 'p', namespace: 'dev' } }, 'metadata.namespace', /IPPool is not namespaced/);
  rejects({ ...GOOD.NetworkSet, metadata: { name: 'p', namespace: 'Dev' } }, 'metadata.namespace', /not a valid DNS label/);
  rejects({ ...GOOD.IPPool, metadata: { name: 'p', owner: 'x' } }, 'metadata.owner', /unknown field 'metadata\.owner'/);
  rejects({ ...GOOD.IPPool, metadata: { name: 'p', labels: { 'bad key!': 'x' } } }, 'metadata.labels["bad key!"]', /label key/);
  rejects({ ...GOOD.IPPool, metadata: { name: 'p', labels: { a: 5 } } }, 'metadata.labels["a"]', /expected string, got number/);
  rejects({ ...GOOD.IPPool, extra: 1 }, 'extra', /unknown field 'extra'/);
  rejects({ ...GOOD.IPPool, status: {} }, 'status', /unknown field 'status'/);
  rejects({ ...GOOD.IPPool, spec: 'cidr' }, 'spec', /expected object, got string/);
});

test('validate: IPPool errors', () => {
  const pool = (s: Doc) => doc('IPPool', 'p', s);
  rejects(pool({}), 'spec.cidr', /missing required field/);
  rejects(pool({ cidr: '10.0.0.0/33' }), 'spec.cidr', /invalid CIDR '10\.0\.0\.0\/33': prefix length 33 > 32/);
  rejects(pool({ cidr: '2001:db8::/129' }), 'spec.cidr', /prefix length 129 > 128/);
  rejects(pool({ cidr: '10.0.0.1/24' }), 'spec.cidr', /host bits set; did you mean '10\.0\.0\.0\/24'/);
  rejects(pool({ cidr: '10.0.0.0' }), 'spec.cidr', /missing prefix length/);
  rejects(pool({ cidr: '10.0.0/8' }), 'spec.cidr', /not an IP address/);
  rejects(pool({ cidr: 10 }), 'spec.cidr', /wrong type: expected string, got number/);
  rejects(pool({ cidr: '10.0.0.0/16', blockSize: 33 }), 'spec.blockSize', /out of range 20-32/);
  rejects(pool({ cidr: '10.0.0.0/16', blockSize: 19 }), 'spec.blockSize', /out of range 20-32/);
  rejects(pool({ cidr: '2001:db8::/64', blockSize: 26 }), 'spec.blockSize', /out of range 116-128/);
  rejects(pool({ cidr: '10.0.0.0/28', blockSize: 26 }), 'spec.blockSize', /larger than the pool/);
  rejects(pool({ cidr: '10.0.0.0/16', ipipMode: 'Sometimes' }), 'spec.ipipMode', /not one of Never, CrossSubnet, Always/);
  rejects(pool({ cidr: '10.0.0.0/16', ipipMode: 'Always', vxlanMode: 'Always' }), 'spec.vxlanMode', /cannot both/);
  rejects(pool({ cidr: '2001:db8::/64', ipipMode: 'Always' }), 'spec.ipipMode', /IPv6/);
  rejects(pool({ cidr: '10.0.0.0/16', natOutgoing: 'yes' }), 'spec.natOutgoing', /expected boolean, got string/);
  rejects(pool({ cidr: '10.0.0.0/16', nodeSelector: 'a ==' }), 'spec.nodeSelector', /invalid selector: expected a quoted string at position 4/);
  rejects(pool({ cidr: '10.0.0.0/16', allowedUses: ['Workload', 'Banana'] }), 'spec.allowedUses[1]', /not one of Workload, Tunnel/);
  rejects(pool({ cidr: '10.0.0.0/16', allowedUses: [] }), 'spec.allowedUses', /must not be empty/);
  rejects(pool({ cidr: '10.0.0.0/16', assignmentMode: 'Auto' }), 'spec.assignmentMode', /Automatic, Manual/);
  rejects(pool({ cidr: '10.0.0.0/16', foo: 1 }), 'spec.foo', /unknown field 'spec\.foo'/);
});

test('validate: rule errors carry the full field path', () => {
  const gnp = (rules: unknown[], extra: Doc = {}) => doc('GlobalNetworkPolicy', 'p', { ingress: rules, ...extra });
  rejects(gnp([{ action: 'Allow', protocol: 'TCP', destination: { ports: [80, 70000] } }]), 'spec.ingress[0].destination.ports[1]', /port 70000 out of range 0-65535/);
  rejects(gnp([{ action: 'Allow', protocol: 'TCP', destination: { ports: ['90:80'] } }]), 'spec.ingress[0].destination.ports[0]', /minimum 90 > maximum 80/);
  rejects(gnp([{ action: 'Allow', protocol: 'TCP', destination: { ports: ['bad port'] } }]), 'spec.ingress[0].destination.ports[0]', /not a port number/);
  rejects(gnp([{ action: 'Allow', protocol: 'ICMP', destination: { ports: [80] } }]), 'spec.ingress[0].destination.ports', /only allowed with protocol TCP, UDP or SCTP/);
  rejects(gnp([{ action: 'Allow', source: { notPorts: [80] } }]), 'spec.ingress[0].source.notPorts', /only allowed with protocol/);
  rejects(gnp([{ protocol: 'TCP' }]), 'spec.ingress[0].action', /missing required field/);
  rejects(gnp([{ action: 'Permit' }]), 'spec.ingress[0].action', /not one of Allow, Deny, Log, Pass/);
  rejects(gnp([{ action: 'Allow', ipVersion: 5 }]), 'spec.ingress[0].ipVersion', /must be 4 or 6/);
  rejects(gnp([{ action: 'Allow', protocol: 'IGMP' }]), 'spec.ingress[0].protocol', /not a protocol/);
  rejects(gnp([{ action: 'Allow', protocol: 256 }]), 'spec.ingress[0].protocol', /protocol 256 out of range 1-255/);
  rejects(gnp([{ action: 'Allow', protocol: 'ICMP', icmp: { type: 255 } }]), 'spec.ingress[0].icmp.type', /ICMP type 255 out of range 0-254/);
  rejects(gnp([{ action: 'Allow', protocol: 'ICMP', icmp: { code: 0 } }]), 'spec.ingress[0].icmp.code', /requires an ICMP type/);
  rejects(gnp([{ action: 'Allow', protocol: 'TCP', icmp: { type: 8 } }]), 'spec.ingress[0].icmp', /requires protocol ICMP/);
  rejects(gnp([{ action: 'Allow', protocol: 'ICMP', ipVersion: 6 }]), 'spec.ingress[0].protocol', /ICMPv6/);
  rejects(gnp([{ action: 'Allow', ipVersion: 4, source: { nets: ['10.0.0.0/8', '2001:db8::/32'] } }]), 'spec.ingress[0].source.nets[1]', /IPv6 but spec\.ingress\[0\]\.ipVersion/);
  rejects(gnp([{ action: 'Allow', source: { nets: ['10.0.0.0/8'] }, destination: { notNets: ['2001:db8::/32'] } }]), 'spec.ingress[0].destination.notNets[0]', /IPv6 but spec\.ingress\[0\]\.source\.nets\[0\]/);
  rejects(gnp([{ action: 'Allow', source: { nets: ['10.0.0.0/40'] } }]), 'spec.ingress[0].source.nets[0]', /prefix length 40 > 32/);
  rejects(gnp([{ action: 'Allow', destination: { selector: 'a == "b" &&' } }]), 'spec.ingress[0].destination.selector', /invalid selector: .* at position 11/);
  rejects(gnp([{ action: 'Allow', destination: { services: { name: 'web' }, ports: [80] } }]), 'spec.ingress[0].destination.ports', /cannot be combined with/);
  rejects(gnp([{ action: 'Allow', http: { paths: [{ exact: '/a', prefix: '/b' }] } }]), 'spec.ingress[0].http.paths[0]', /exactly one of exact or prefix/);
  rejects(gnp([{ action: 'Allow', metadata: { annotations: { a: 1 } } }]), 'spec.ingress[0].metadata.annotations["a"]', /expected string, got number/);
  rejects(gnp([{ action: 'Allow', source: { bogus: true } }]), 'spec.ingress[0].source.bogus', /unknown field/);
  rejects(gnp([null]), 'spec.ingress[0]', /must not be null/);
  rejects(doc('GlobalNetworkPolicy', 'p', { egress: [{ action: 'Allow' }], ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [1, 2, 99999] } }] }), 'spec.ingress[0].destination.ports[2]', /99999/);
});

test('validate: policy-level rules', () => {
  rejects(doc('GlobalNetworkPolicy', 'block', { tier: 'security' }), 'metadata.name', /must be named 'security\.<name>'/);
  rejects(doc('NetworkPolicy', 'p', { tier: 'Bad.Tier' }), 'spec.tier', /not a valid tier name/);
  rejects(doc('GlobalNetworkPolicy', 'p', { preDNAT: true }), 'spec.applyOnForward', /applyOnForward must be true/);
  rejects(doc('GlobalNetworkPolicy', 'p', { preDNAT: true, applyOnForward: true, egress: [{ action: 'Deny' }] }), 'spec.egress', /not allowed when preDNAT/);
  rejects(doc('GlobalNetworkPolicy', 'p', { preDNAT: true, doNotTrack: true, applyOnForward: true }), 'spec.preDNAT', /cannot both be true/);
  rejects(doc('NetworkPolicy', 'p', { preDNAT: true }), 'spec.preDNAT', /unknown field/);
  rejects(doc('NetworkPolicy', 'p', { namespaceSelector: 'all()' }), 'spec.namespaceSelector', /unknown field/);
  rejects(doc('NetworkPolicy', 'p', { types: ['Ingress', 'Ingress'] }), 'spec.types[1]', /duplicate/);
  rejects(doc('NetworkPolicy', 'p', { types: ['Forward'] }), 'spec.types[0]', /not one of Ingress, Egress/);
  rejects(doc('NetworkPolicy', 'p', { order: 'first' }), 'spec.order', /expected number, got string/);
  rejects(doc('Profile', 'p', { ingress: [{ action: 'Pass' }] }), 'spec.ingress[0].action', /Pass is not allowed in a Profile/);
  rejects(doc('Profile', 'p', { labelsToApply: { 'a/b/c': 'x' } }), 'spec.labelsToApply["a/b/c"]', /invalid prefix/);
  rejects(doc('Tier', 't', { defaultAction: 'Allow' }), 'spec.defaultAction', /not one of Deny, Pass/);
  rejects(doc('Tier', 'a.b', {}), 'metadata.name', /tier name 'a\.b' must not contain '\.'/);
});

test('validate: BGP errors', () => {
  rejects(doc('BGPPeer', 'p', { node: 'n1', nodeSelector: 'all()' }), 'spec.nodeSelector', /cannot be used together with spec\.node/);
  rejects(doc('BGPPeer', 'p', { peerIP: '192.0.2.1', peerSelector: 'all()', asNumber: 1 }), 'spec.peerSelector', /together with spec\.peerIP/);
  rejects(doc('BGPPeer', 'p', { peerIP: '192.0.2.1' }), 'spec.asNumber', /required when spec\.peerIP/);
  rejects(doc('BGPPeer', 'p', { peerIP: '192.0.2.300', asNumber: 1 }), 'spec.peerIP', /not an IP address/);
  rejects(doc('BGPPeer', 'p', { peerIP: '192.0.2.1:0', asNumber: 1 }), 'spec.peerIP', /port 0 out of range 1-65535/);
  rejects(doc('BGPPeer', 'p', { peerIP: '[10.0.0.1]:179', asNumber: 1 }), 'spec.peerIP', /IPv6/);
  rejects(doc('BGPPeer', 'p', { asNumber: 0 }), 'spec.asNumber', /AS number 0 out of range 1-4294967295/);
  rejects(doc('BGPPeer', 'p', { asNumber: 4294967296 }), 'spec.asNumber', /out of range/);
  rejects(doc('BGPPeer', 'p', { sourceAddress: 'Any' }), 'spec.sourceAddress', /UseNodeIP, None/);
  rejects(doc('BGPPeer', 'p', { maxRestartTime: '2 minutes' }), 'spec.maxRestartTime', /duration/);
  rejects(doc('BGPPeer', 'p', { password: { secretKeyRef: { name: 's' } } }), 'spec.password.secretKeyRef.key', /missing required field/);
  rejects(doc('BGPConfiguration', 'default', { listenPort: 0 }), 'spec.listenPort', /port 0 out of range 1-65535/);
  rejects(doc('BGPConfiguration', 'default', { communities: [{ name: 'c', value: '70000:1' }] }), 'spec.communities[0].value', /0-65535/);
  rejects(doc('BGPConfiguration', 'default', { communities: [{ name: 'c', value: 'abc' }] }), 'spec.communities[0].value', /not a community value/);
  rejects(doc('BGPConfiguration', 'default', { prefixAdvertisements: [{ cidr: '10.0.0.0/8', communities: ['undefined-name'] }] }), 'spec.prefixAdvertisements[0].communities[0]', /neither a community defined/);
  rejects(doc('BGPConfiguration', 'default', { serviceClusterIPs: [{ cidr: '10.96.0.0/99' }] }), 'spec.serviceClusterIPs[0].cidr', /prefix length 99/);
  rejects(doc('BGPConfiguration', 'default', { bindMode: 'All' }), 'spec.bindMode', /None, NodeIP/);
  rejects(doc('BGPConfiguration', 'default', { logSeverityScreen: 'Loud' }), 'spec.logSeverityScreen', /Debug, Info/);
  rejects(doc('BGPConfiguration', 'default', { nodeToNodeMeshEnabled: 1 }), 'spec.nodeToNodeMeshEnabled', /expected boolean, got number/);
});

test('validate: Node, endpoint and set errors', () => {
  rejects(doc('Node', 'n', { bgp: { ipv4Address: '2001:db8::1/64' } }), 'spec.bgp.ipv4Address', /not an IPv4 CIDR/);
  rejects(doc('Node', 'n', { bgp: { routeReflectorClusterID: 'cluster-1' } }), 'spec.bgp.routeReflectorClusterID', /invalid IP address/);
  rejects(doc('Node', 'n', { orchRefs: [{ nodeName: 'n' }] }), 'spec.orchRefs[0].orchestrator', /missing required field/);
  rejects(doc('Node', 'n', { addresses: [{ address: '10.0.0.1', type: 'Public' }] }), 'spec.addresses[0].type', /InternalIP, ExternalIP, CalicoNodeIP/);
  rejects(doc('Node', 'n', {}, { status: 'ok' }), 'status', /expected object/);
  rejects(doc('WorkloadEndpoint', 'w', { interfaceName: 'cali1' }), 'spec.node', /missing required field/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n' }), 'spec.interfaceName', /missing required field/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n', interfaceName: 'a-very-long-interface-name' }), 'spec.interfaceName', /interface name/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n', interfaceName: 'cali1', ipNetworks: ['10.0.0.300/32'] }), 'spec.ipNetworks[0]', /not an IP address/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n', interfaceName: 'cali1', mac: 'zz' }), 'spec.mac', /MAC address/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n', interfaceName: 'cali1', ports: [{ name: 'http', protocol: 'ICMP', port: 80 }] }), 'spec.ports[0].protocol', /not one of TCP, UDP, SCTP/);
  rejects(doc('WorkloadEndpoint', 'w', { node: 'n', interfaceName: 'cali1', ipv4Gateway: '2001:db8::1' }), 'spec.ipv4Gateway', /not an IPv4 address/);
  rejects(doc('HostEndpoint', 'h', { node: 'n' }), 'spec.interfaceName', /one of interfaceName or expectedIPs is required/);
  rejects(doc('HostEndpoint', 'h', { interfaceName: 'eth0' }), 'spec.node', /missing required field/);
  rejects(doc('HostEndpoint', 'h', { node: 'n', expectedIPs: ['10.0.0.0/8'] }), 'spec.expectedIPs[0]', /invalid IP address/);
  rejects(doc('HostEndpoint', 'h', { node: 'n', interfaceName: 'eth0', ports: [{ name: 'x', protocol: 'TCP', port: 0 }] }), 'spec.ports[0].port', /port 0 out of range 1-65535/);
  rejects(doc('GlobalNetworkSet', 's', { nets: ['not-a-net'] }), 'spec.nets[0]', /not an IP address/);
  rejects(doc('GlobalNetworkSet', 's', { nets: '10.0.0.0/8' }), 'spec.nets', /expected list, got string/);
  rejects(doc('NetworkSet', 's', { nets: ['10.0.0.0/8'], allowedEgressDomains: [] }), 'spec.allowedEgressDomains', /unknown field/);
});

test('validate: FelixConfiguration and ClusterInformation errors', () => {
  const felix = (s: Doc) => doc('FelixConfiguration', 'default', s);
  rejects(felix({ reportingInterval: 30 }), 'spec.reportingInterval', /expected string, got number/);
  rejects(felix({ reportingInterval: '30 seconds' }), 'spec.reportingInterval', /duration/);
  rejects(felix({ defaultEndpointToHostAction: 'Allow' }), 'spec.defaultEndpointToHostAction', /Drop, Return, Accept/);
  rejects(felix({ iptablesBackend: 'nft' }), 'spec.iptablesBackend', /Legacy, NFT, Auto/);
  rejects(felix({ chainInsertMode: 'Prepend' }), 'spec.chainInsertMode', /Insert, Append/);
  rejects(felix({ healthPort: 99999 }), 'spec.healthPort', /healthPort 99999 out of range 0-65535/);
  rejects(felix({ failsafeInboundHostPorts: [{ protocol: 'TCP' }] }), 'spec.failsafeInboundHostPorts[0].port', /missing required field/);
  rejects(felix({ failsafeInboundHostPorts: [{ protocol: 'ICMP', port: 1 }] }), 'spec.failsafeInboundHostPorts[0].protocol', /TCP, UDP, SCTP/);
  rejects(felix({ routeTableRange: { min: 10, max: 5 } }), 'spec.routeTableRange.min', /min 10 > max 5/);
  rejects(felix({ natOutgoingAddress: 'eth0' }), 'spec.natOutgoingAddress', /invalid IP address/);
  rejects(felix({ bpfEnabled: 'true' }), 'spec.bpfEnabled', /expected boolean/);
  rejects(felix({ noSuchKnob: true }), 'spec.noSuchKnob', /unknown field/);
  rejects(doc('ClusterInformation', 'default', { datastoreReady: 'yes' }), 'spec.datastoreReady', /expected boolean, got string/);
  rejects(doc('ClusterInformation', 'default', { clusterGUID: 12 }), 'spec.clusterGUID', /expected string, got number/);
});

test('validate: validateAll reports every problem, validateResource the first', () => {
  const d = { apiVersion: V, kind: 'IPPool', metadata: { name: 'Bad' }, spec: { cidr: '10.0.0.0/33', ipipMode: 'x', foo: 1 } };
  const all = validateAll(d);
  assert.deepEqual(all.map((e) => e.field).sort(), ['metadata.name', 'spec.cidr', 'spec.foo', 'spec.ipipMode']);
  for (const e of all) {
    assert.equal(e.kind, 'IPPool');
    assert.equal(e.resourceName, 'Bad');
    assert.equal(e.code, 'E_VALIDATION');
  }
  assert.throws(() => validateResource(d), (e: unknown) => e instanceof ValidationError && e.field === all[0].field);
  assert.match(all.find((e) => e.field === 'spec.cidr')!.message, /^IPPool 'Bad': field spec\.cidr: invalid CIDR '10\.0\.0\.0\/33'/);
});

test('validate: a __proto__ key in a free-form map is kept as data, never as a prototype', () => {
  const d = JSON.parse('{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n","annotations":{"__proto__":"x"}},"status":{"__proto__":{"polluted":true}}}');
  const r = validateResource(d);
  assert.equal(Object.getPrototypeOf(r.status), Object.prototype);
  assert.equal((r.status as Doc).polluted, undefined);
  assert.ok(Object.hasOwn(r.status!, '__proto__'));
  assert.equal(({} as Doc).polluted, undefined);
});

// ---- Properties ---------------------------------------------------------------------------------

test('validate property: any JSON value only ever raises ValidationError', () => {
  const kinds = fc.constantFrom(...KINDS.map((k) => k.kind), 'Frob');
  const json = fc.jsonValue({ maxDepth: 4 });
  const shaped = fc.record(
    {
      apiVersion: fc.oneof(fc.constant(V), json),
      kind: fc.oneof(kinds, json),
      metadata: fc.oneof(fc.record({ name: fc.oneof(fc.constantFrom('a', 'b.c', ''), json), namespace: fc.oneof(fc.constant('ns'), json) }, { requiredKeys: [] }), json),
      spec: fc.oneof(json, fc.dictionary(fc.constantFrom('cidr', 'selector', 'ingress', 'egress', 'nets', 'node', 'peerIP', 'types', 'order', 'blockSize', 'interfaceName', 'asNumber'), json)),
      status: json,
    },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(fc.oneof(json, shaped), (d) => {
      try {
        const r = validateResource(d);
        assert.deepEqual(validateResource(r), r);
      } catch (err) {
        assert.ok(err instanceof ValidationError, `unexpected ${String(err)}`);
        assert.doesNotMatch(err.reason, /internal error/);
      }
    }),
    { numRuns: 2000 },
  );
});

test('validate property: normalisation is idempotent for generated pools and policies', () => {
  const v4 = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 8, max: 26 })).map(([a, b, len]) => {
    const n = ((a << 24) | (b << 16)) >>> 0;
    const masked = len === 0 ? 0 : (n & (~0 << (32 - len))) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${len}`;
  });
  const pool = fc.record({ cidr: v4, natOutgoing: fc.boolean(), ipipMode: fc.constantFrom('Never', 'Always', 'CrossSubnet'), disabled: fc.boolean() }, { requiredKeys: ['cidr'] });
  const ruleArb = fc.record({ action: fc.constantFrom('Allow', 'Deny', 'Log', 'Pass'), protocol: fc.constantFrom('TCP', 'udp', 6, 'SCTP'), destination: fc.record({ ports: fc.array(fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom('80', '1:2', '9:9', 'http'))), nets: fc.array(v4, { maxLength: 2 }) }, { requiredKeys: [] }) }, { requiredKeys: ['action', 'protocol'] });
  const policy = fc.record({ ingress: fc.array(ruleArb, { maxLength: 2 }), egress: fc.array(ruleArb, { maxLength: 2 }), order: fc.double({ noNaN: true, noDefaultInfinity: true }), selector: fc.constantFrom('', 'a == "b"', "has(x) && y in {'1','2'}") }, { requiredKeys: [] });
  fc.assert(
    fc.property(fc.oneof(pool.map((s) => doc('IPPool', 'p', s)), policy.map((s) => doc('GlobalNetworkPolicy', 'p', s))), (d) => {
      const r = validateResource(d);
      assert.deepEqual(validateResource(r), r);
      assert.deepEqual(validateResource(structuredClone(r)), r);
    }),
    { numRuns: 500 },
  );
});
