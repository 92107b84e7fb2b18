/**
 * BgpNode with a fake speaker and a fake FIB: nothing happens before InSync; the speaker starts
 * with the computed configuration, gets the local routes and initialSyncDone() after the first
 * in-sync apply; a BGPPeer change reaches setPeers only; invalid resources are reported and
 * skipped; Loc-RIB changes reach the FIB; restart detection; stale sweep after convergence or the
 * timeout; periodic resync; reflector mode (no FIB, no local routes); clean stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FibChange, PeerStatus, Speaker, SpeakerConfig, SpeakerPeerConfig, SpeakerStatus } from '../../src/bgp/speaker-api.ts';
import { parseRouteProtocols } from '../../src/agent/node-role.ts';
import { BgpNode, localWorkloadRoutes, peerConverged, type FibPart } from '../../src/agent/bgp-node.ts';
import type { SyncUpdate } from '../../src/datastore/syncer.ts';
import type { DataplaneModel, LocalEndpoint } from '../../src/agent/model.ts';
import { setLogLevel } from '../../src/log.ts';

setLogLevel('silent');

class FakeSpeaker implements Speaker {
  readonly calls: string[] = [];
  config: SpeakerConfig;
  peers: readonly SpeakerPeerConfig[] = [];
  local: string[] = [];
  peerState: PeerStatus['state'] = 'Active';
  since = new Date().toISOString();
  eor: Array<'ipv4-unicast' | 'ipv6-unicast'> | undefined;
  fibListener: ((c: readonly FibChange[]) => void) | undefined;
  snapshot: FibChange[] = [];
  constructor(config: SpeakerConfig) {
    this.config = config;
  }
  async start(): Promise<void> {
    this.calls.push('start');
  }
  setPeers(peers: readonly SpeakerPeerConfig[]): void {
    this.calls.push(`setPeers:${peers.map((p) => p.id).join(',')}`);
    this.peers = peers;
  }
  setLocalRoutes(prefixes: Iterable<string>): void {
    this.local = [...prefixes];
    this.calls.push(`local:${this.local.join(',')}`);
  }
  initialSyncDone(): void {
    this.calls.push('initialSyncDone');
  }
  onFib(listener: (changes: readonly FibChange[]) => void): () => void {
    this.fibListener = listener;
    return () => (this.fibListener = undefined);
  }
  fibSnapshot(): FibChange[] {
    return this.snapshot;
  }
  status(): SpeakerStatus {
    return {
      asn: this.config.asn,
      routerId: this.config.routerId,
      peers: this.peers.map((p) => ({
        id: p.id, address: p.address, port: p.port ?? 179, asn: p.asn, kind: p.kind, state: this.peerState, since: this.since, info: '',
        prefixesReceived: 0, prefixesAdvertised: 0, ...(this.eor !== undefined ? { endOfRibReceived: this.eor } : {}),
      })),
      locRib: { 'ipv4-unicast': 0, 'ipv6-unicast': 0 },
      localRoutes: this.local.length,
    };
  }
  async reconfigure(config: SpeakerConfig): Promise<void> {
    this.calls.push(`reconfigure:${config.asn}`);
    this.config = config;
  }
  async stop(text?: string): Promise<void> {
    this.calls.push(`stop:${text ?? ''}`);
  }
}

class FakeFib implements FibPart {
  readonly calls: string[] = [];
  stale = 0;
  routes192: string[] = [];
  applied: FibChange[] = [];
  async start(): Promise<{ stale: number }> {
    this.calls.push('start');
    return { stale: this.stale };
  }
  async apply(changes: readonly FibChange[]): Promise<unknown> {
    this.applied.push(...changes);
    return {};
  }
  async syncDone(): Promise<unknown> {
    this.calls.push('syncDone');
    return {};
  }
  async resync(all: readonly FibChange[]): Promise<unknown> {
    this.calls.push(`resync:${all.length}`);
    return {};
  }
  /** Kernel routes by protocol for exportedKernelRoutes (192: the agent's workload routes). */
  readonly kernelRoutes = new Map<number, string[]>();
  async exportedKernelRoutes(protocols: readonly number[]): Promise<string[]> {
    if (protocols.length === 1 && protocols[0] === 192) return this.routes192;
    return protocols.flatMap((p) => this.kernelRoutes.get(p) ?? []);
  }
  blackholes: string[][] = [];
  async setBlackholes(prefixes: readonly string[], complete: boolean): Promise<unknown> {
    this.blackholes.push([...prefixes]);
    this.calls.push(`blackholes:${prefixes.join(',')}:${complete}`);
    return {};
  }
  async close(): Promise<void> {
    this.calls.push('close');
  }
}

const P = '/calico/resources/v3/projectcalico.org/';
let rev = 1;
const put = (plural: string, name: string, kind: string, spec: unknown, labels?: Record<string, string>): SyncUpdate => ({
  key: `${P}${plural}/${name}`,
  value: JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind, metadata: { name, ...(labels ? { labels } : {}) }, spec }),
  revision: String(rev++),
});
const del = (plural: string, name: string): SyncUpdate => ({ key: `${P}${plural}/${name}`, value: null, revision: String(rev++) });
const nodeUp = (name: string, ip: string, extra: Record<string, unknown> = {}) => put('nodes', name, 'Node', { bgp: { ipv4Address: `${ip}/24`, ...extra } });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function model(nets: Array<[string[], string[]]>): DataplaneModel {
  const endpoints = new Map<string, LocalEndpoint>();
  nets.forEach(([v4, v6], i) => endpoints.set(`wep/ns/w${i}`, { id: `wep/ns/w${i}`, type: 'workload', name: `w${i}`, iface: `cali${i}`, ipv4Nets: v4, ipv6Nets: v6 } as unknown as LocalEndpoint));
  endpoints.set('hep/h', { id: 'hep/h', type: 'host', name: 'h', iface: '*', ipv4Nets: ['10.0.0.1/32'], ipv6Nets: [] } as unknown as LocalEndpoint);
  return { hostname: 'a', endpoints, policies: new Map(), ipSets: new Map(), pools: [], failsafeInbound: [], failsafeOutbound: [], problems: [] };
}

function setup(opts: { fib?: FakeFib; originates?: boolean; eorTimeoutMs?: number; resyncIntervalMs?: number; settleMs?: number; exportKernelProtocols?: number[]; aggregateBlocks?: boolean } = {}) {
  const speakers: FakeSpeaker[] = [];
  const fib = opts.fib;
  const node = new BgpNode({
    nodeName: 'a',
    createSpeaker: (c) => {
      const s = new FakeSpeaker(c);
      speakers.push(s);
      return s;
    },
    ...(fib ? { fib } : {}),
    originates: opts.originates ?? true,
    debounceMs: 5,
    eorTimeoutMs: opts.eorTimeoutMs ?? 30_000,
    settleMs: opts.settleMs ?? 0,
    ...(opts.resyncIntervalMs ? { resyncIntervalMs: opts.resyncIntervalMs } : {}),
    ...(opts.exportKernelProtocols ? { exportKernelProtocols: opts.exportKernelProtocols } : {}),
    ...(opts.aggregateBlocks ? { aggregateBlocks: true } : {}),
  });
  return { node, speakers, fib };
}

test('localWorkloadRoutes: workload /32 and /128 only, sorted and deduplicated', () => {
  assert.deepEqual(localWorkloadRoutes(model([[['10.65.0.2/32'], ['fd00:65::2/128']], [['10.65.0.1/32', '10.65.0.2/32'], []]])), ['10.65.0.1/32', '10.65.0.2/32', 'fd00:65::2/128']);
});

test('peerConverged: End-of-RIB when reported, else Established for the settle time', () => {
  const base = { id: 'x', address: 'x', port: 179, asn: 1, kind: 'mesh', info: '', prefixesReceived: 0, prefixesAdvertised: 0 } as const;
  const t = Date.parse('2026-01-01T00:00:10Z');
  assert.equal(peerConverged({ ...base, state: 'Active', since: '2026-01-01T00:00:00Z' }, t, 1000), false);
  assert.equal(peerConverged({ ...base, state: 'Established', since: '2026-01-01T00:00:00Z' }, t, 1000), true);
  assert.equal(peerConverged({ ...base, state: 'Established', since: '2026-01-01T00:00:09.5Z' }, t, 1000), false);
  assert.equal(peerConverged({ ...base, state: 'Established', since: '2026-01-01T00:00:00Z', endOfRibReceived: [] }, t, 1000), false);
  assert.equal(peerConverged({ ...base, state: 'Established', since: '2026-01-01T00:00:09.9Z', endOfRibReceived: ['ipv4-unicast'] }, t, 1000), true);
});

test('node: nothing before InSync; then start, local routes, peers, initialSyncDone after the first in-sync apply', async () => {
  const { node, speakers } = setup({ fib: new FakeFib() });
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1'), nodeUp('b', '10.0.0.2')]);
  await sleep(20);
  assert.equal(speakers.length, 0, 'no speaker before InSync');
  assert.equal(node.status().state, 'waiting-for-datastore');
  node.onApplied(model([[['10.65.0.1/32'], []]]), false);
  node.onSyncStatus('InSync');
  await sleep(20);
  await node.whenIdle();
  const s = speakers[0]!;
  assert.equal(s.config.routerId, '10.0.0.1');
  assert.equal(s.config.restarting, undefined);
  assert.deepEqual(s.calls, ['start', 'local:10.65.0.1/32', 'setPeers:10.0.0.2']);
  node.onApplied(model([[['10.65.0.1/32'], []]]), true);
  assert.deepEqual(s.calls.slice(3), ['initialSyncDone'], 'unchanged routes are not re-sent');
  node.onApplied(model([[['10.65.0.1/32', '10.65.0.3/32'], []]]), true);
  assert.deepEqual(s.calls.slice(4), ['local:10.65.0.1/32,10.65.0.3/32']);
  assert.equal(node.status().state, 'running');
  await node.stop('bye');
  assert.equal(s.calls.at(-1), 'stop:bye');
});

test('a BGPPeer change reaches setPeers only; an AS change reconfigures; invalid resources are reported and skipped', async () => {
  const { node, speakers } = setup();
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1'), nodeUp('b', '10.0.0.2')]);
  node.onSyncStatus('InSync');
  node.setLocalRoutes([], true);
  await sleep(20);
  await node.whenIdle();
  const s = speakers[0]!;
  s.calls.length = 0;
  node.onUpdates([put('bgppeers', 'tor', 'BGPPeer', { peerIP: '10.0.0.254', asNumber: 65000 })]);
  await sleep(20);
  await node.whenIdle();
  assert.deepEqual(s.calls, ['setPeers:10.0.0.2,10.0.0.254']);
  s.calls.length = 0;
  // Invalid JSON and a password peer: reported, others unaffected.
  node.onUpdates([
    { key: `${P}bgppeers/broken`, value: '{not json', revision: String(rev++) },
    put('bgppeers', 'secret', 'BGPPeer', { peerIP: '10.0.0.253', asNumber: 65000, password: { secretKeyRef: { name: 'x', key: 'y' } } }),
  ]);
  await sleep(20);
  await node.whenIdle();
  assert.deepEqual(s.calls, [], 'nothing changed for the speaker');
  const keys = node.status().problems.map((p) => p.key).sort();
  assert.deepEqual(keys, [`${P}bgppeers/broken`, 'BGPPeer/secret']);
  node.onUpdates([del('bgppeers', 'broken'), put('bgpconfigurations', 'default', 'BGPConfiguration', { asNumber: 65100 })]);
  await sleep(20);
  await node.whenIdle();
  assert.deepEqual(s.calls, ['reconfigure:65100', 'setPeers:10.0.0.2,10.0.0.254'], 'peer AS changed with it');
  assert.deepEqual(node.status().problems.map((p) => p.key), ['BGPPeer/secret']);
  assert.equal(speakers.length, 1);
  await node.stop();
});

test('no BGP address: disabled with the reason; the speaker starts when the address appears and stops when it goes', async () => {
  const { node, speakers } = setup({ originates: false });
  await node.start();
  node.onUpdates([put('nodes', 'a', 'Node', {})]);
  node.onSyncStatus('InSync');
  await sleep(20);
  await node.whenIdle();
  assert.equal(speakers.length, 0);
  assert.equal(node.status().state, 'disabled');
  assert.match(node.status().reason!, /no BGP address/);
  node.onUpdates([nodeUp('a', '10.0.0.1')]);
  await sleep(20);
  await node.whenIdle();
  assert.deepEqual(speakers[0]!.calls, ['start', 'setPeers:', 'initialSyncDone'], 'a reflector (originates nothing) is synced at once');
  node.onUpdates([del('nodes', 'a')]);
  await sleep(20);
  await node.whenIdle();
  assert.match(speakers[0]!.calls.at(-1)!, /^stop:/);
  assert.equal(node.status().state, 'disabled');
  await node.stop();
});

test('FIB: Loc-RIB changes are applied; stale routes swept after every peer converged; periodic resync', async () => {
  const fib = new FakeFib();
  const { node, speakers } = setup({ fib, resyncIntervalMs: 30 });
  await node.start();
  assert.deepEqual(fib.calls, ['start']);
  node.onUpdates([nodeUp('a', '10.0.0.1'), nodeUp('b', '10.0.0.2')]);
  node.onSyncStatus('InSync');
  node.setLocalRoutes([], true);
  await sleep(20);
  await node.whenIdle();
  const s = speakers[0]!;
  s.fibListener!([{ prefix: '10.65.1.0/26', family: 4, nextHops: ['10.0.0.2'] }]);
  await sleep(5);
  assert.deepEqual(fib.applied, [{ prefix: '10.65.1.0/26', family: 4, nextHops: ['10.0.0.2'] }]);
  await sleep(400);
  assert.ok(!fib.calls.includes('syncDone'), 'not while a peer is down');
  s.peerState = 'Established';
  s.eor = [];
  await sleep(400);
  assert.ok(!fib.calls.includes('syncDone'), 'not before End-of-RIB when the speaker reports it');
  s.eor = ['ipv4-unicast'];
  await sleep(400);
  assert.equal(fib.calls.filter((c) => c === 'syncDone').length, 1);
  assert.equal(node.fibSynced, true);
  s.snapshot = [{ prefix: '10.65.1.0/26', family: 4, nextHops: ['10.0.0.2'] }];
  await sleep(80);
  assert.ok(fib.calls.includes('resync:1'));
  await node.stop();
  assert.equal(fib.calls.at(-1), 'close');
});

test('restart: routes of ours in the kernel -> the speaker starts restarting; the sweep happens at the timeout when a peer never comes', async () => {
  for (const [stale, r192, expect] of [[3, [], true], [0, ['10.65.0.1/32'], true], [0, [], false]] as const) {
    const fib = new FakeFib();
    fib.stale = stale;
    fib.routes192 = [...r192];
    const { node, speakers } = setup({ fib, eorTimeoutMs: 300 });
    await node.start();
    assert.equal(node.restarting, expect);
    node.onUpdates([nodeUp('a', '10.0.0.1'), nodeUp('b', '10.0.0.2')]);
    node.onSyncStatus('InSync');
    await sleep(20);
    await node.whenIdle();
    assert.equal(speakers[0]!.config.restarting, expect ? true : undefined);
    assert.ok(!speakers[0]!.calls.includes('initialSyncDone'), 'waits for the local routes');
    await sleep(600);
    assert.deepEqual(fib.calls.filter((c) => c === 'syncDone'), ['syncDone'], 'timeout sweep');
    await node.stop();
  }
});

test('a speaker that cannot start (listen address missing) is dropped and retried', async () => {
  let attempts = 0;
  const started: FakeSpeaker[] = [];
  const node = new BgpNode({
    nodeName: 'a',
    originates: false,
    debounceMs: 5,
    createSpeaker: (c) => {
      const s = new FakeSpeaker(c);
      if (++attempts === 1) s.start = async () => Promise.reject(new Error('listen EADDRNOTAVAIL 10.0.0.1:179'));
      started.push(s);
      return s;
    },
  });
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1')]);
  node.onSyncStatus('InSync');
  await sleep(1_300);
  await node.whenIdle();
  assert.equal(attempts, 2);
  assert.match(started[0]!.calls.at(-1)!, /^stop:/, 'the failed speaker is stopped');
  assert.equal(node.status().state, 'running');
  assert.equal(node.speaker, started[1]);
  await node.stop();
});

test('kernel routes of the configured protocols are advertised beside the workload routes', async () => {
  const fib = new FakeFib();
  fib.kernelRoutes.set(4, ['192.0.2.0/24', '10.65.0.1/32']);
  fib.kernelRoutes.set(16, ['198.51.100.0/24']);
  const { node, speakers } = setup({ fib, exportKernelProtocols: [4] });
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1')]);
  node.onSyncStatus('InSync');
  node.onApplied(model([[['10.65.0.1/32'], ['fd00::1/128']]]), true);
  await sleep(20);
  await node.whenIdle();
  const s = speakers[0]!;
  assert.ok(s.calls.includes('local:10.65.0.1/32,192.0.2.0/24,fd00::1/128'), s.calls.join(' | '));
  assert.ok(!s.calls.some((c) => c.includes('198.51.100.0/24')), 'a protocol not listed is not exported');
  fib.kernelRoutes.set(4, []);
  node.onApplied(model([[['10.65.0.1/32'], ['fd00::1/128']]]), true);
  await sleep(20);
  assert.equal(s.calls.filter((c) => c.startsWith('local:')).at(-1), 'local:10.65.0.1/32,fd00::1/128', 'a static route that went away is withdrawn');
  await node.stop('bye');
});

test('parseRouteProtocols: names and numbers; bad entries and our own protocols are refused by name', () => {
  assert.deepEqual(parseRouteProtocols(['static', '16', ' Boot ', '4', '']), [4, 16, 3]);
  assert.throws(() => parseRouteProtocols(['staticc']), /'staticc' is not a route protocol/);
  assert.throws(() => parseRouteProtocols(['256']), /'256' is not a route protocol/);
  assert.throws(() => parseRouteProtocols(['193']), /routecat's own protocol/);
});

const aff = (host: string, name: string, state: string | null): SyncUpdate => ({
  key: `/calico/ipam/v2/host/${host}/ipv${name.includes(':') ? 6 : 4}/block/${name}`,
  value: state === null ? null : JSON.stringify({ state, deleted: false }),
  revision: String(rev++),
});

test('aggregation: confirmed blocks replace their workloads, borrowed /32s stay; blackholes follow the affinities', async () => {
  const fib = new FakeFib();
  const { node, speakers } = setup({ fib, aggregateBlocks: true });
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1'), nodeUp('b', '10.0.0.2')]);
  node.onSyncStatus('InSync');
  node.onAffinityUpdates([aff('a', '10.70.1.0-26', 'confirmed'), aff('a', '10.70.1.64-26', 'pending'), aff('b', '10.70.2.0-26', 'confirmed'), aff('a', 'fd00:70::-122', 'confirmed')]);
  node.onApplied(model([[['10.70.1.2/32'], ['fd00:70::2/128']], [['10.70.1.66/32', '10.70.2.9/32'], []]]), true);
  await sleep(20);
  await node.whenIdle();
  const s = speakers[0]!;
  assert.ok(!s.calls.includes('initialSyncDone'), 'not complete before the affinities are in sync');
  assert.deepEqual(fib.blackholes, [], 'no blackholes before the affinities are in sync');
  node.onAffinityStatus('InSync');
  assert.deepEqual(s.local, ['10.70.1.0/26', '10.70.1.66/32', '10.70.2.9/32', 'fd00:70::/122'], 'pending block and another host\'s block: host routes');
  assert.equal(s.calls.at(-1), 'initialSyncDone');
  await sleep(5);
  assert.deepEqual(fib.blackholes, [['10.70.1.0/26', 'fd00:70::/122']]);
  assert.ok(fib.calls.includes('blackholes:10.70.1.0/26,fd00:70::/122:true'));
  // The pending block is confirmed: its workload's /32 folds into it, and it gets a blackhole.
  node.onAffinityUpdates([aff('a', '10.70.1.64-26', 'confirmed')]);
  assert.deepEqual(s.local, ['10.70.1.0/26', '10.70.1.64/26', '10.70.2.9/32', 'fd00:70::/122']);
  // The first block is released: withdrawn, its workload back to a /32, blackhole removed.
  node.onAffinityUpdates([aff('a', '10.70.1.0-26', null), aff('a', 'fd00:70::-122', 'pendingDeletion')]);
  assert.deepEqual(s.local, ['10.70.1.2/32', '10.70.1.64/26', '10.70.2.9/32', 'fd00:70::2/128']);
  await sleep(5);
  assert.deepEqual(fib.blackholes.at(-1), ['10.70.1.64/26']);
  // Unchanged affinities: nothing re-sent.
  const before = [s.calls.length, fib.blackholes.length];
  node.onAffinityUpdates([aff('a', '10.70.1.64-26', 'confirmed'), aff('b', '10.70.3.0-26', 'confirmed')]);
  await sleep(5);
  assert.deepEqual([s.calls.length, fib.blackholes.length], before);
  await node.stop();
});

test('without aggregateBlocks, affinity updates are ignored (host routes, no blackholes)', async () => {
  const fib = new FakeFib();
  const { node, speakers } = setup({ fib });
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1')]);
  node.onSyncStatus('InSync');
  node.onAffinityUpdates([aff('a', '10.70.1.0-26', 'confirmed')]);
  node.onAffinityStatus('InSync');
  node.onApplied(model([[['10.70.1.2/32'], []]]), true);
  await sleep(20);
  await node.whenIdle();
  assert.deepEqual(speakers[0]!.local, ['10.70.1.2/32']);
  assert.deepEqual(fib.blackholes, []);
  await node.stop();
});

test('service ranges from BGPConfiguration are advertised; workloads in a disableBGPExport pool are not', async () => {
  const { node, speakers } = setup();
  await node.start();
  node.onUpdates([nodeUp('a', '10.0.0.1'), put('bgpconfigurations', 'default', 'BGPConfiguration', { serviceClusterIPs: [{ cidr: '10.96.0.0/12' }], serviceExternalIPs: [{ cidr: '192.0.2.7/24' }] })]);
  node.onSyncStatus('InSync');
  const m = model([[['10.65.0.1/32', '10.70.0.9/32'], []]]);
  const withPools = (disable: boolean): DataplaneModel => ({
    ...m,
    pools: [
      { name: 'p1', cidr: '10.65.0.0/16', natOutgoing: false, disabled: false },
      { name: 'private', cidr: '10.70.0.0/16', natOutgoing: false, disabled: false, ...(disable ? { disableBGPExport: true as const } : {}) },
    ],
  });
  node.onApplied(withPools(true), true);
  await sleep(150);
  await node.whenIdle();
  const s = speakers[0]!;
  const lastLocal = () => s.calls.filter((c) => c.startsWith('local:')).at(-1);
  assert.equal(lastLocal(), 'local:10.65.0.1/32,10.96.0.0/12,192.0.2.0/24', 'service ranges (canonical) beside the workload route; the private pool\'s workload is kept home');
  node.onApplied(withPools(false), true);
  await sleep(20);
  assert.equal(lastLocal(), 'local:10.65.0.1/32,10.70.0.9/32,10.96.0.0/12,192.0.2.0/24', 'export enabled again');
  node.onUpdates([put('bgpconfigurations', 'default', 'BGPConfiguration', {})]);
  await sleep(150);
  await node.whenIdle();
  assert.equal(lastLocal(), 'local:10.65.0.1/32,10.70.0.9/32', 'service ranges withdrawn with the configuration');
  await node.stop('bye');
});
