/**
 * computeBgp: Calico's BGP semantics from Node, BGPPeer and BGPConfiguration resources to the
 * speaker's configuration and peer list (mesh, explicit peers, selectors, route reflection,
 * rejected passwords, ports, IPv6, AS overrides, dedupe) and independence from resource order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { computeBgp, communitiesFor, parseCommunity, parsePeerIP, type BgpResources } from '../../src/agent/bgp-config.ts';
import type { BGPConfiguration, BGPPeer, BGPPeerSpec, BGPConfigurationSpec, Node, NodeBGPSpec } from '../../src/model/types.ts';

const node = (name: string, bgp: NodeBGPSpec | undefined, labels: Record<string, string> = {}): Node => ({
  apiVersion: 'projectcalico.org/v3',
  kind: 'Node',
  metadata: { name, labels },
  spec: bgp ? { bgp } : {},
});
const peer = (name: string, spec: BGPPeerSpec): BGPPeer => ({ apiVersion: 'projectcalico.org/v3', kind: 'BGPPeer', metadata: { name }, spec });
const bgpConfig = (name: string, spec: BGPConfigurationSpec): BGPConfiguration => ({ apiVersion: 'projectcalico.org/v3', kind: 'BGPConfiguration', metadata: { name }, spec });

const three = [node('a', { ipv4Address: '10.0.0.1/24' }), node('b', { ipv4Address: '10.0.0.2/24' }), node('c', { ipv4Address: '10.0.0.10/24' })];
const res = (r: Partial<BgpResources>): BgpResources => ({ nodes: r.nodes ?? three, bgpPeers: r.bgpPeers ?? [], bgpConfigs: r.bgpConfigs ?? [] });

test('no Node or no BGP address: no speaker, with the reason', () => {
  const missing = computeBgp('zz', res({}));
  assert.equal(missing.config, undefined);
  assert.match(missing.reason!, /no Node resource named 'zz'/);
  const noAddr = computeBgp('x', res({ nodes: [node('x', undefined)] }));
  assert.equal(noAddr.config, undefined);
  assert.match(noAddr.reason!, /no BGP address/);
});

test('defaults: AS 64512, router id = IPv4 address, listen on the BGP addresses at 179, next-hop-self addresses', () => {
  const r = computeBgp('a', res({}));
  assert.deepEqual(r.config, {
    asn: 64512,
    routerId: '10.0.0.1',
    listen: { addresses: ['10.0.0.1'], port: 179 },
    nextHop: { ipv4: '10.0.0.1' },
    restartTimeSec: 120,
  });
});

test('mesh: every other node; the node whose address sorts lower as a string is passive', () => {
  const a = computeBgp('a', res({}));
  assert.deepEqual(a.peers.map((p) => [p.id, p.kind, p.passive ?? false, p.localAddress, p.source]), [
    // '10.0.0.10' > '10.0.0.1' and '10.0.0.2' > '10.0.0.1': a is passive towards both
    ['10.0.0.10', 'mesh', true, '10.0.0.1', 'Node/c'],
    ['10.0.0.2', 'mesh', true, '10.0.0.1', 'Node/b'],
  ]);
  const c = computeBgp('c', res({}));
  // string order, not numeric: '10.0.0.2' > '10.0.0.10', so c is passive towards b and connects to a
  assert.deepEqual(c.peers.map((p) => [p.id, p.passive ?? false]), [
    ['10.0.0.1', false],
    ['10.0.0.2', true],
  ]);
  const b = computeBgp('b', res({}));
  assert.deepEqual(b.peers.map((p) => [p.id, p.passive ?? false]), [
    ['10.0.0.1', false],
    ['10.0.0.10', false],
  ]);
  // Exactly one side of every pair connects.
  for (const [x, y] of [['a', 'b'], ['a', 'c'], ['b', 'c']] as const) {
    const px = computeBgp(x, res({})).peers.find((p) => p.source === `Node/${y}`)!;
    const py = computeBgp(y, res({})).peers.find((p) => p.source === `Node/${x}`)!;
    assert.notEqual(px.passive ?? false, py.passive ?? false, `${x}<->${y}`);
  }
});

test('mesh disabled: no mesh peers; nodeMeshMaxRestartTime reaches mesh peers', () => {
  assert.deepEqual(computeBgp('a', res({ bgpConfigs: [bgpConfig('default', { nodeToNodeMeshEnabled: false })] })).peers, []);
  const r = computeBgp('a', res({ bgpConfigs: [bgpConfig('default', { nodeMeshMaxRestartTime: '5m' })] }));
  assert.ok(r.peers.every((p) => p.maxRestartTimeSec === 300));
});

test('AS: BGPConfiguration asNumber for everyone, Node spec.bgp.asNumber overrides for that node', () => {
  const nodes = [node('a', { ipv4Address: '10.0.0.1/24', asNumber: 65001 }), node('b', { ipv4Address: '10.0.0.2/24' })];
  const r = computeBgp('a', res({ nodes, bgpConfigs: [bgpConfig('default', { asNumber: 65000 })] }));
  assert.equal(r.config!.asn, 65001);
  assert.equal(r.peers[0]!.asn, 65000);
  const b = computeBgp('b', res({ nodes, bgpConfigs: [bgpConfig('default', { asNumber: 65000 })] }));
  assert.equal(b.config!.asn, 65000);
  assert.equal(b.peers[0]!.asn, 65001);
});

test('ports: listenPort from BGPConfiguration (per-node override), the flag overrides our listener only', () => {
  const cfgs = [bgpConfig('default', { listenPort: 1790 }), bgpConfig('node.b', { listenPort: 1791 })];
  const a = computeBgp('a', res({ bgpConfigs: cfgs }));
  assert.deepEqual(a.config!.listen, { addresses: ['10.0.0.1'], port: 1790 });
  const toB = a.peers.find((p) => p.address === '10.0.0.2')!;
  assert.equal(toB.port, 1791);
  assert.equal(toB.id, '10.0.0.2:1791');
  assert.equal(a.peers.find((p) => p.address === '10.0.0.10')!.id, '10.0.0.10:1790');
  const flagged = computeBgp('a', res({ bgpConfigs: cfgs }), { listenPort: 2000 });
  assert.deepEqual(flagged.config!.listen, { addresses: ['10.0.0.1'], port: 2000 });
  assert.equal(flagged.peers.find((p) => p.address === '10.0.0.2')!.port, 1791, 'peers are still reached at their own port');
});

test('peerIP forms: ip, ip:port, [v6]:port, bare v6', () => {
  assert.deepEqual(parsePeerIP('192.0.2.1'), { address: '192.0.2.1' });
  assert.deepEqual(parsePeerIP('192.0.2.1:1179'), { address: '192.0.2.1', port: 1179 });
  assert.deepEqual(parsePeerIP('[fd00:0::1]:1179'), { address: 'fd00::1', port: 1179 });
  assert.deepEqual(parsePeerIP('fd00::0:1'), { address: 'fd00::1' });
});

test('global, node and nodeSelector BGPPeers; peerIP with port', () => {
  const nodes = [node('a', { ipv4Address: '10.0.0.1/24' }, { rack: 'r1' }), node('b', { ipv4Address: '10.0.0.2/24' }, { rack: 'r2' })];
  const bgpPeers = [
    peer('tor-global', { peerIP: '10.0.0.254', asNumber: 65000 }),
    peer('a-only', { node: 'a', peerIP: '10.0.0.253:1179', asNumber: 65001, keepOriginalNextHop: true, maxRestartTime: '90s', keepaliveTime: '10s' }),
    peer('rack2', { nodeSelector: "rack == 'r2'", peerIP: '10.0.0.252', asNumber: 65002 }),
  ];
  const cfgs = [bgpConfig('default', { nodeToNodeMeshEnabled: false })];
  const a = computeBgp('a', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.deepEqual(a.peers, [
    { id: '10.0.0.253:1179', address: '10.0.0.253', port: 1179, asn: 65001, kind: 'node-specific', localAddress: '10.0.0.1', keepOriginalNextHop: true, maxRestartTimeSec: 90, holdTimeSec: 30, source: 'BGPPeer/a-only' },
    { id: '10.0.0.254', address: '10.0.0.254', asn: 65000, kind: 'global', localAddress: '10.0.0.1', source: 'BGPPeer/tor-global' },
  ]);
  const b = computeBgp('b', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.deepEqual(b.peers.map((p) => [p.id, p.kind, p.asn]), [
    ['10.0.0.252', 'node-specific', 65002],
    ['10.0.0.254', 'global', 65000],
  ]);
});

test('peerSelector: every matching Node at its BGP address and AS, and the reverse side', () => {
  const nodes = [
    node('a', { ipv4Address: '10.0.0.1/24' }, { edge: 'yes' }),
    node('b', { ipv4Address: '10.0.0.2/24', asNumber: 65010 }, { core: 'yes' }),
    node('c', { ipv4Address: '10.0.0.3/24' }),
  ];
  const bgpPeers = [peer('edge-to-core', { nodeSelector: "edge == 'yes'", peerSelector: "core == 'yes'" })];
  const cfgs = [bgpConfig('default', { nodeToNodeMeshEnabled: false })];
  const a = computeBgp('a', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.deepEqual(a.peers.map((p) => [p.id, p.asn, p.kind]), [['10.0.0.2', 65010, 'node-specific']]);
  const b = computeBgp('b', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.deepEqual(b.peers.map((p) => [p.id, p.asn]), [['10.0.0.1', 64512]], 'b peers back with a');
  assert.deepEqual(computeBgp('c', res({ nodes, bgpPeers, bgpConfigs: cfgs })).peers, []);
  const manual = [peer('edge-to-core', { nodeSelector: "edge == 'yes'", peerSelector: "core == 'yes'", reversePeering: 'Manual' })];
  assert.deepEqual(computeBgp('b', res({ nodes, bgpPeers: manual, bgpConfigs: cfgs })).peers, []);
});

test('never peer with ourselves (peerIP or peerSelector naming this node)', () => {
  const bgpPeers = [peer('self', { peerIP: '10.0.0.1', asNumber: 64512 }), peer('all', { peerSelector: 'all()' })];
  const r = computeBgp('a', res({ bgpPeers, bgpConfigs: [bgpConfig('default', { nodeToNodeMeshEnabled: false })] }));
  assert.ok(r.peers.every((p) => p.address !== '10.0.0.1'));
  assert.deepEqual(r.peers.map((p) => p.id), ['10.0.0.10', '10.0.0.2']);
});

test('route reflector (Calico RR docs): clients are the non-reflectors, same-cluster reflectors are not clients', () => {
  const nodes = [
    node('rr1', { ipv4Address: '10.0.0.100/24', routeReflectorClusterID: '224.0.0.1' }, { 'route-reflector': 'true' }),
    node('rr2', { ipv4Address: '10.0.0.101/24', routeReflectorClusterID: '224.0.0.1' }, { 'route-reflector': 'true' }),
    node('a', { ipv4Address: '10.0.0.1/24' }),
    node('b', { ipv4Address: '10.0.0.2/24' }),
  ];
  const bgpPeers = [peer('peer-with-route-reflectors', { nodeSelector: 'all()', peerSelector: "route-reflector == 'true'" })];
  const cfgs = [bgpConfig('default', { nodeToNodeMeshEnabled: false })];
  const rr1 = computeBgp('rr1', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.equal(rr1.config!.clusterId, '224.0.0.1');
  assert.deepEqual(rr1.peers.map((p) => [p.id, p.kind, p.routeReflectorClient ?? false]), [
    ['10.0.0.1', 'rr-client', true],
    ['10.0.0.101', 'reflector', false],
    ['10.0.0.2', 'rr-client', true],
  ]);
  const a = computeBgp('a', res({ nodes, bgpPeers, bgpConfigs: cfgs }));
  assert.equal(a.config!.clusterId, undefined);
  assert.deepEqual(a.peers.map((p) => [p.id, p.kind, p.routeReflectorClient ?? false]), [
    ['10.0.0.100', 'reflector', false],
    ['10.0.0.101', 'reflector', false],
  ]);
  // The reflector role's --cluster-id applies when the Node has none.
  const plain = computeBgp('a', res({ nodes, bgpPeers, bgpConfigs: cfgs }), { clusterId: '1.2.3.4' });
  assert.equal(plain.config!.clusterId, '1.2.3.4');
  assert.ok(plain.peers.every((p) => p.routeReflectorClient === true), 'reflectors of another cluster are clients');
});

test('password: that BGPPeer is rejected with a problem naming it, the others still work', () => {
  const bgpPeers = [
    peer('secret-tor', { peerIP: '10.0.0.254', asNumber: 65000, password: { secretKeyRef: { name: 'bgp', key: 'pw' } } }),
    peer('open-tor', { peerIP: '10.0.0.253', asNumber: 65000 }),
  ];
  const r = computeBgp('a', res({ bgpPeers }));
  assert.deepEqual(r.problems.map((p) => p.key), ['BGPPeer/secret-tor']);
  assert.match(r.problems[0]!.reason, /BGPPeer 'secret-tor'.*TCP MD5 cannot be set on a socket by Node\.js/);
  assert.ok(r.peers.some((p) => p.source === 'BGPPeer/open-tor'));
  assert.ok(!r.peers.some((p) => p.address === '10.0.0.254'));
  assert.equal(r.peers.filter((p) => p.kind === 'mesh').length, 2, 'the mesh is unaffected');
  const mesh = computeBgp('a', res({ bgpConfigs: [bgpConfig('default', { nodeMeshPassword: { secretKeyRef: { name: 'x', key: 'y' } } })] }));
  assert.deepEqual(mesh.peers, []);
  assert.match(mesh.problems[0]!.reason, /nodeMeshPassword: TCP MD5/);
});

test('a selector that does not parse is a problem for that BGPPeer only', () => {
  const r = computeBgp('a', res({ bgpPeers: [peer('bad', { nodeSelector: 'rack ===', peerIP: '10.0.0.9', asNumber: 1 })] }));
  assert.equal(r.problems[0]!.key, 'BGPPeer/bad');
  assert.equal(r.peers.length, 2);
});

test('IPv6: separate sessions per family from the address of that family; v6 router id fallback', () => {
  const nodes = [node('a', { ipv4Address: '10.0.0.1/24', ipv6Address: 'fd00::1/64' }), node('b', { ipv4Address: '10.0.0.2/24', ipv6Address: 'fd00:0::2/64' }), node('v6only', { ipv6Address: 'fd00::1:2:3:4/64' })];
  const a = computeBgp('a', res({ nodes, bgpPeers: [peer('v6tor', { peerIP: '[fd00::fe]:1179', asNumber: 65000 })] }));
  assert.deepEqual(a.config!.listen, { addresses: ['10.0.0.1', 'fd00::1'], port: 179 });
  assert.deepEqual(a.config!.nextHop, { ipv4: '10.0.0.1', ipv6: 'fd00::1' });
  assert.deepEqual(a.peers.map((p) => [p.id, p.kind, p.localAddress, p.passive ?? false]), [
    ['10.0.0.2', 'mesh', '10.0.0.1', true],
    ['[fd00::fe]:1179', 'global', 'fd00::1', false],
    ['fd00::1:2:3:4', 'mesh', 'fd00::1', true],
    ['fd00::2', 'mesh', 'fd00::1', true],
  ]);
  const v6 = computeBgp('v6only', res({ nodes }));
  assert.equal(v6.config!.routerId, '0.3.0.4');
  assert.deepEqual(v6.peers.map((p) => p.id), ['fd00::1', 'fd00::2']);
});

test('dedupe: a peer listed by the mesh and a BGPPeer is one session, the explicit one', () => {
  const bgpPeers = [peer('b-explicit', { peerIP: '10.0.0.2', asNumber: 64512, maxRestartTime: '10s' }), peer('b-again', { node: 'a', peerIP: '10.0.0.2', asNumber: 64512 })];
  const r = computeBgp('a', res({ bgpPeers }));
  const toB = r.peers.filter((p) => p.address === '10.0.0.2');
  assert.equal(toB.length, 1);
  assert.equal(toB[0]!.source, 'BGPPeer/b-again', 'node-specific beats global beats mesh');
  assert.equal(toB[0]!.passive, undefined, 'explicit peers connect actively');
});

test('communities: names and literals per advertised prefix; a /0 advertisement tags every local route', () => {
  assert.deepEqual(parseCommunity('65000:100'), { standard: (65000 * 65536 + 100) >>> 0 });
  assert.deepEqual(parseCommunity('65000:1:2'), { large: [65000, 1, 2] });
  const cfg = bgpConfig('default', {
    communities: [{ name: 'web', value: '65000:80' }, { name: 'big', value: '4200000000:1:2' }],
    prefixAdvertisements: [{ cidr: '10.65.1.0/24', communities: ['web', '65000:443'] }, { cidr: '0.0.0.0/0', communities: ['big', '65000:1'] }],
  });
  const r = computeBgp('a', res({ bgpConfigs: [cfg] }));
  assert.deepEqual(r.config!.localCommunities, [(65000 << 16 | 1) >>> 0]);
  assert.deepEqual(r.config!.localLargeCommunities, [[4200000000, 1, 2]]);
  const c = communitiesFor('10.65.1.5/32', r.prefixCommunities);
  assert.deepEqual(c.communities, [(65000 * 65536 + 80) >>> 0, (65000 * 65536 + 443) >>> 0, (65000 * 65536 + 1) >>> 0]);
  assert.deepEqual(communitiesFor('10.66.0.1/32', r.prefixCommunities).communities, [(65000 * 65536 + 1) >>> 0]);
});

test('the result depends on the resources, not on their order', () => {
  const nodes = [
    node('rr', { ipv4Address: '10.0.0.100/24', routeReflectorClusterID: '1.1.1.1' }, { rr: 'y' }),
    node('a', { ipv4Address: '10.0.0.1/24', ipv6Address: 'fd00::1/64' }, { rack: '1' }),
    node('b', { ipv4Address: '10.0.0.2/24', ipv6Address: 'fd00::2/64' }, { rack: '2' }),
  ];
  const bgpPeers = [
    peer('to-rr', { peerSelector: 'has(rr)' }),
    peer('tor1', { nodeSelector: "rack == '1'", peerIP: '10.0.0.254', asNumber: 65000 }),
    peer('dup', { peerIP: '10.0.0.254', asNumber: 65000 }),
  ];
  const cfgs = [bgpConfig('default', { asNumber: 65100 }), bgpConfig('node.a', { listenPort: 1790 })];
  fc.assert(
    fc.property(fc.shuffledSubarray(nodes, { minLength: 3 }), fc.shuffledSubarray(bgpPeers, { minLength: 3 }), fc.shuffledSubarray(cfgs, { minLength: 2 }), (n, p, c) => {
      for (const who of ['rr', 'a', 'b']) {
        assert.deepEqual(computeBgp(who, { nodes: n, bgpPeers: p, bgpConfigs: c }), computeBgp(who, { nodes, bgpPeers, bgpConfigs: cfgs }));
      }
    }),
    { numRuns: 50 },
  );
});
