/**
 * BgpSpeaker (src/bgp/speaker/speaker.ts) over real TCP on loopback: several speakers in this
 * process, each listening on its own 127.0.0.x (all local on Linux `lo`) at a test port, plus
 * "test peers" (a bare BgpSession driven by the test) where the test needs to see the attributes
 * on the wire, control the socket (a peer vanishing without NOTIFICATION) or send ROUTE-REFRESH.
 * Covers: iBGP mesh exchange of IPv4/IPv6 local routes into onFib with the right next hops,
 * withdrawal, setPeers reconciliation, route reflection (RFC 4456) with ORIGINATOR_ID/CLUSTER_LIST,
 * ECMP, graceful restart (receiving side: stale until End-of-RIB, or until the timer), End-of-RIB
 * held until initialSyncDone() on a restarting speaker, route refresh with BoRR/EoRR, status().
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { BgpSpeaker } from '../../src/bgp/speaker/speaker.ts';
import type { FibChange, PeerStatus, SpeakerConfig, SpeakerPeerConfig } from '../../src/bgp/speaker-api.ts';
import { BgpSession } from '../../src/bgp/session/session.ts';
import { encodeMessage, endOfRib, endOfRibFamily, packUpdates } from '../../src/bgp/codec/index.ts';
import type { AfiSafi, Capabilities, PathAttributes, RouteRefreshMessage } from '../../src/bgp/types.ts';
import { setLogLevel } from '../../src/log.ts';
import fc from 'fast-check';
import { Rib } from '../../src/bgp/rib/rib.ts';
import { fibChanges } from '../../src/bgp/speaker/fib-output.ts';

setLogLevel((process.env.ROUTECAT_LOG_LEVEL as 'debug' | undefined) ?? 'silent');

const PORT = 20_000 + (process.pid % 20_000);
const ASN = 64512;
const addr = (n: number): string => `127.0.0.${n}`;
const v6hop = (n: number): string => `fd00::${n}`;

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A speaker with a FIB mirror (prefix -> next hops) fed by onFib. */
class Node {
  readonly n: number;
  readonly speaker: BgpSpeaker;
  readonly fib = new Map<string, readonly string[]>();
  readonly fibBatches: FibChange[][] = [];

  constructor(n: number, extra: Partial<SpeakerConfig> = {}) {
    this.n = n;
    this.speaker = new BgpSpeaker(Node.config(n, extra));
    this.speaker.onFib((changes) => {
      this.fibBatches.push([...changes]);
      for (const c of changes) {
        if (c.nextHops.length === 0) this.fib.delete(c.prefix);
        else this.fib.set(c.prefix, c.nextHops);
      }
    });
  }

  static config(n: number, extra: Partial<SpeakerConfig> = {}): SpeakerConfig {
    return {
      asn: ASN,
      routerId: addr(n),
      listen: { addresses: [addr(n)], port: PORT },
      nextHop: { ipv4: addr(n), ipv6: v6hop(n) },
      connectRetrySec: 1,
      ...extra,
    };
  }

  /** Our configuration for peer `m` (the lower address is passive, like Calico's mesh). */
  peer(m: number, extra: Partial<SpeakerPeerConfig> = {}): SpeakerPeerConfig {
    return { id: `${addr(m)}:${PORT}`, address: addr(m), port: PORT, asn: ASN, kind: 'mesh', passive: this.n < m, localAddress: addr(this.n), ...extra };
  }

  peerStatus(m: number): PeerStatus {
    const s = this.speaker.status().peers.find((p) => p.address === addr(m));
    assert.ok(s, `node ${this.n} has peer ${m}`);
    return s;
  }

  established(m: number): boolean {
    return this.speaker.status().peers.find((p) => p.address === addr(m))?.state === 'Established';
  }
}

/** A bare BgpSession as a peer, recording what it receives. */
class TestPeer {
  readonly session: BgpSession;
  readonly rib = new Map<string, PathAttributes & { mpNextHop?: string }>();
  readonly eor = new Set<AfiSafi>();
  readonly refreshes: RouteRefreshMessage[] = [];
  readonly announcements: string[] = [];
  socket?: Socket;

  constructor(n: number, to: number, caps: Partial<Capabilities> = {}, passive = false) {
    this.session = new BgpSession({
      localAs: ASN,
      peerAs: ASN,
      localId: addr(n),
      peerAddress: addr(to),
      peerPort: PORT,
      localAddress: addr(n),
      passive,
      connectRetrySec: 1,
      capabilities: { multiprotocol: ['ipv4-unicast', 'ipv6-unicast'], routeRefresh: true, enhancedRouteRefresh: true, ...caps },
    });
    this.session.on('update', (u) => {
      const fam = endOfRibFamily(u);
      if (fam) return void this.eor.add(fam);
      for (const w of [...u.withdrawn, ...(u.mpUnreach?.withdrawn ?? [])]) this.rib.delete(w.prefix);
      for (const n of u.nlri) {
        this.rib.set(n.prefix, u.attributes);
        this.announcements.push(n.prefix);
      }
      for (const n of u.mpReach?.nlri ?? []) {
        this.rib.set(n.prefix, { ...u.attributes, mpNextHop: u.mpReach!.nextHop });
        this.announcements.push(n.prefix);
      }
    });
    this.session.on('route-refresh', (m) => this.refreshes.push(m));
  }

  /** Connect ourselves and hand the socket to the (passive) session: the test owns the socket. */
  async dial(n: number, to: number): Promise<void> {
    this.session.start();
    const s = connect({ host: addr(to), port: PORT, localAddress: addr(n) });
    s.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    this.socket = s;
    this.session.acceptSocket(s);
  }

  async announce(af: AfiSafi, prefixes: readonly string[], nextHop: string, eor = true): Promise<void> {
    const opts = this.session.encodeOptions!;
    const bufs = packUpdates({ afiSafi: af, attributes: { origin: 0, asPath: [], localPref: 100 }, nextHop, nlri: prefixes.map((prefix) => ({ prefix })), withdrawn: [] }, opts);
    if (eor) bufs.push(endOfRib(af, opts));
    await this.session.send(bufs);
  }
}

const cleanups: Array<() => Promise<void>> = [];
async function stopAll(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
}
function track(...nodes: Node[]): void {
  for (const n of nodes) cleanups.push(() => n.speaker.stop('test done'));
}
function trackPeer(...peers: TestPeer[]): void {
  for (const p of peers) cleanups.push(() => p.session.stop('test done'));
}
after(stopAll);

describe('FIB output (fibChanges) keeps no per-prefix record', () => {
  // Reference: the per-prefix record of what was reported that the speaker used to keep. The
  // stateless fibChanges must emit exactly what it would, because every Loc-RIB batch carries the
  // selection previously reported for each prefix it names.
  test('property: same FibChanges as a tracker that records what it reported', () => {
    const peers = [1, 2, 3].map((n) => ({ peerId: `p${n}`, address: `192.0.2.${n}`, asn: ASN, ibgp: true, routerId: `10.0.0.${n}`, isReflectorClient: false }));
    const prefixes = ['10.0.0.0/24', '10.0.1.0/24', 'fd00::/64'];
    const op = fc.record({
      peer: fc.nat(3), // 3: local origination
      prefix: fc.constantFrom(...prefixes),
      nh: fc.option(fc.constantFrom('192.0.2.1', '192.0.2.2', '192.0.2.3'), { nil: undefined }), // undefined: withdraw
      lp: fc.constantFrom(100, 200),
      flush: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 50 }), (ops) => {
        const rib = new Rib({ asn: ASN, routerId: '10.0.0.9', maxPaths: 4 });
        for (const p of peers) rib.addPeer(p);
        const record = new Map<string, string>();
        const fib = new Map<string, string>();
        rib.onBestChanged((batch) => {
          const want: FibChange[] = [];
          for (const c of batch) {
            const nhs = new Set<string>();
            if (c.best !== undefined && !c.best.peer.local) {
              for (const p of c.multipath) if (!p.peer.local && p.interned.attrs.nextHop !== undefined) nhs.add(p.interned.attrs.nextHop);
            }
            const key = [...nhs].sort().join(',');
            if (key === (record.get(c.prefix) ?? '')) continue;
            if (key === '') record.delete(c.prefix);
            else record.set(c.prefix, key);
            want.push({ prefix: c.prefix, family: c.afiSafi === 'ipv6-unicast' ? 6 : 4, nextHops: key === '' ? [] : key.split(',') });
          }
          const got = fibChanges(batch);
          assert.deepEqual(got.map((c) => ({ ...c, nextHops: [...c.nextHops] })), want);
          for (const c of got) {
            if (c.nextHops.length === 0) assert.ok(fib.delete(c.prefix), `removal of ${c.prefix} never installed`);
            else fib.set(c.prefix, c.nextHops.join(','));
          }
        });
        for (const o of ops) {
          const af: AfiSafi = o.prefix.includes(':') ? 'ipv6-unicast' : 'ipv4-unicast';
          if (o.peer === 3) {
            if (o.nh === undefined) rib.withdrawLocal(o.prefix);
            else rib.originate(o.prefix, { origin: 0 });
          } else if (o.nh === undefined) rib.update(peers[o.peer], af, [], [o.prefix]);
          else rib.update(peers[o.peer], af, [{ prefix: o.prefix, attrs: { origin: 0, localPref: o.lp, nextHop: o.nh } }], []);
          if (o.flush) rib.flush();
        }
        rib.flush();
        assert.deepEqual(fib, record);
      }),
      { numRuns: 300 },
    );
  });
});

describe('BgpSpeaker', { concurrency: 1, timeout: 60_000 }, () => {
  test('iBGP mesh: v4/v6 local routes into onFib, withdrawal, ECMP, setPeers reconciliation, status()', async () => {
    const a = new Node(2);
    const b = new Node(3);
    const c = new Node(4);
    track(a, b, c);
    for (const x of [a, b, c]) await x.speaker.start();
    a.speaker.setPeers([a.peer(3), a.peer(4)]);
    b.speaker.setPeers([b.peer(2), b.peer(4)]);
    c.speaker.setPeers([c.peer(2), c.peer(3)]);
    a.speaker.setLocalRoutes(['10.2.0.0/24', '10.2.1.0/24', 'fd00:2::/64', '10.99.0.0/24']);
    b.speaker.setLocalRoutes(['10.3.0.0/24', '10.99.0.0/24']);
    for (const x of [a, b, c]) x.speaker.initialSyncDone();

    await waitFor('mesh Established', () => a.established(3) && a.established(4) && b.established(4));
    await waitFor('C learns A and B', () => c.fib.size === 5, 10_000);
    assert.deepEqual(c.fib.get('10.2.0.0/24'), [addr(2)]);
    assert.deepEqual(c.fib.get('10.2.1.0/24'), [addr(2)]);
    assert.deepEqual(c.fib.get('fd00:2::/64'), [v6hop(2)]);
    assert.deepEqual(c.fib.get('10.3.0.0/24'), [addr(3)]);
    // ECMP: equal iBGP paths from A and B.
    assert.deepEqual(c.fib.get('10.99.0.0/24'), [addr(2), addr(3)]);
    // Local routes never reach onFib; A prefers its own 10.99.0.0/24; iBGP-learned not re-advertised.
    assert.ok(!a.fib.has('10.2.0.0/24') && !a.fib.has('10.99.0.0/24'));
    assert.deepEqual(a.fib.get('10.3.0.0/24'), [addr(3)]);
    assert.equal(a.fib.size, 1);
    assert.deepEqual(
      c.speaker.fibSnapshot().sort((x, y) => x.prefix.localeCompare(y.prefix)),
      [...c.fib].map(([prefix, nextHops]) => ({ prefix, family: prefix.includes(':') ? 6 : 4, nextHops })).sort((x, y) => x.prefix.localeCompare(y.prefix)),
    );

    // status(): received/advertised figures, Loc-RIB counts.
    const st = a.speaker.status();
    assert.equal(st.localRoutes, 4);
    assert.equal(st.locRib['ipv4-unicast'], 4); // 10.2.0/24, 10.2.1/24, 10.99/24, 10.3/24
    assert.equal(st.locRib['ipv6-unicast'], 1);
    const ab = a.peerStatus(3);
    assert.equal(ab.state, 'Established');
    assert.equal(ab.prefixesReceived, 2);
    assert.equal(ab.prefixesAdvertised, 4);
    assert.deepEqual(ab.endOfRibSent, ['ipv4-unicast', 'ipv6-unicast']);
    assert.ok(!Number.isNaN(Date.parse(ab.since)));

    // Withdraw via setLocalRoutes: C removes A's route; ECMP shrinks to B.
    a.speaker.setLocalRoutes(['fd00:2::/64', '10.2.1.0/24']);
    await waitFor('C drops 10.2.0.0/24', () => !c.fib.has('10.2.0.0/24'));
    await waitFor('ECMP shrinks to B', () => c.fib.get('10.99.0.0/24')?.length === 1);
    assert.deepEqual(c.fib.get('10.99.0.0/24'), [addr(3)]);
    assert.deepEqual(c.fib.get('fd00:2::/64'), [v6hop(2)]);

    // setPeers: unchanged peer B untouched, changed peer C reset.
    const bBefore = a.peerStatus(3).establishedTransitions;
    const cBefore = c.peerStatus(2).establishedTransitions ?? 0;
    a.speaker.setPeers([a.peer(3), a.peer(4, { holdTimeSec: 60 })]);
    await waitFor('A-C re-established', () => (c.peerStatus(2).establishedTransitions ?? 0) > cBefore && a.established(4), 15_000);
    assert.match(c.peerStatus(2).info, /NOTIFICATION received 6\/6/);
    assert.equal(a.peerStatus(3).establishedTransitions, bBefore);
    assert.equal(a.peerStatus(3).state, 'Established');
    await waitFor('C has A routes again', () => c.fib.has('10.2.1.0/24'));

    // setPeers without C: C is deconfigured on A (Cease/3); C loses A's routes.
    a.speaker.setPeers([a.peer(3)]);
    await waitFor('C drops A routes', () => !c.fib.has('10.2.1.0/24') && !c.fib.has('fd00:2::/64'));
    assert.match(c.peerStatus(2).info, /NOTIFICATION received 6\/3/);
    assert.equal(a.speaker.status().peers.length, 1);
    await stopAll();
  });

  test('route reflector: client->client with ORIGINATOR_ID/CLUSTER_LIST, non-client->non-client blocked', async () => {
    const CLUSTER = '10.255.0.1';
    const r = new Node(5, { clusterId: CLUSTER });
    const c1 = new Node(6);
    const n1 = new Node(7);
    track(r, c1, n1);
    for (const x of [r, c1, n1]) await x.speaker.start();
    r.speaker.setPeers([
      r.peer(6, { routeReflectorClient: true, kind: 'rr-client' }),
      r.peer(7),
      r.peer(8, { routeReflectorClient: true, kind: 'rr-client', passive: true }),
      r.peer(9, { passive: true }),
    ]);
    c1.speaker.setPeers([c1.peer(5, { kind: 'reflector' })]);
    n1.speaker.setPeers([n1.peer(5)]);
    c1.speaker.setLocalRoutes(['10.6.0.0/24', 'fd00:6::/64']);
    n1.speaker.setLocalRoutes(['10.7.0.0/24']);
    r.speaker.setLocalRoutes(['10.5.0.0/24']);
    const t2 = new TestPeer(8, 5); // a client
    const tn2 = new TestPeer(9, 5); // a non-client
    trackPeer(t2, tn2);
    t2.session.start();
    tn2.session.start();

    await waitFor('client T2 gets client and non-client routes', () => t2.rib.has('10.6.0.0/24') && t2.rib.has('10.7.0.0/24') && t2.rib.has('10.5.0.0/24') && t2.rib.has('fd00:6::/64'));
    const refl = t2.rib.get('10.6.0.0/24')!;
    assert.equal(refl.originatorId, addr(6));
    assert.deepEqual(refl.clusterList, [CLUSTER]);
    assert.equal(refl.nextHop, addr(6), 'reflection keeps the next hop');
    assert.equal(t2.rib.get('fd00:6::/64')!.mpNextHop, v6hop(6));
    assert.equal(t2.rib.get('10.5.0.0/24')!.nextHop, addr(5));
    assert.equal(t2.rib.get('10.5.0.0/24')!.originatorId, undefined);

    await waitFor('non-client T2 gets the client route and End-of-RIB', () => tn2.rib.has('10.6.0.0/24') && tn2.eor.has('ipv4-unicast'));
    await sleep(300);
    assert.ok(!tn2.rib.has('10.7.0.0/24'), 'non-client -> non-client is not reflected');
    assert.deepEqual(tn2.rib.get('10.6.0.0/24')!.clusterList, [CLUSTER]);
    // The speakers' FIBs: N1 learns C1's route via R; C1 drops its own reflected route (ORIGINATOR_ID).
    await waitFor('N1 learns C1 route via R', () => n1.fib.has('10.6.0.0/24'));
    assert.deepEqual(n1.fib.get('10.6.0.0/24'), [addr(6)]);
    await waitFor('C1 learns N1 route', () => c1.fib.has('10.7.0.0/24'));
    assert.ok(!c1.fib.has('10.6.0.0/24'));
    const st = r.speaker.status();
    assert.equal(st.clusterId, CLUSTER);
    assert.equal(r.peerStatus(6).prefixesReceived, 2);
    await stopAll();
  });

  test('graceful restart (helper): stale until End-of-RIB, then until the restart timer', async () => {
    const s = new Node(2);
    track(s);
    await s.speaker.start();
    s.speaker.setPeers([s.peer(3, { passive: true, maxRestartTimeSec: 2 }), s.peer(4, { passive: true })]);
    s.speaker.initialSyncDone();
    const gr = (restarting: boolean): Partial<Capabilities> => ({ gracefulRestart: { restartTimeSec: 60, restarting, families: [{ afiSafi: 'ipv4-unicast', forwardingPreserved: restarting }] } });

    const t = new TestPeer(3, 2, gr(false), true);
    trackPeer(t);
    await t.dial(3, 2);
    await waitFor('T Established', () => t.session.state === 'Established');
    await t.announce('ipv4-unicast', ['10.30.1.0/24', '10.30.2.0/24'], addr(3));
    // A peer without graceful restart, for contrast.
    const u = new TestPeer(4, 2, {}, true);
    trackPeer(u);
    await u.dial(4, 2);
    await waitFor('U Established', () => u.session.state === 'Established');
    await u.announce('ipv4-unicast', ['10.40.1.0/24'], addr(4));
    await waitFor('S learns T and U routes', () => s.fib.has('10.30.1.0/24') && s.fib.has('10.30.2.0/24') && s.fib.has('10.40.1.0/24'));

    // Both vanish without NOTIFICATION.
    t.socket!.destroy();
    u.socket!.destroy();
    await waitFor('S sees T down', () => s.peerStatus(3).state !== 'Established');
    await waitFor('U routes withdrawn at once', () => !s.fib.has('10.40.1.0/24'));
    assert.ok(s.peerStatus(3).gracefulRestart, JSON.stringify(s.peerStatus(3)));
    assert.match(s.peerStatus(3).info, /graceful restart/);
    assert.ok(s.fib.has('10.30.1.0/24') && s.fib.has('10.30.2.0/24'), 'T routes kept stale');
    await t.session.stop();

    // T comes back (restarting, forwarding preserved), re-announces one route, later End-of-RIB.
    const t2 = new TestPeer(3, 2, gr(true), true);
    trackPeer(t2);
    await t2.dial(3, 2);
    await waitFor('T2 Established', () => t2.session.state === 'Established');
    await t2.announce('ipv4-unicast', ['10.30.1.0/24'], addr(3), false);
    await sleep(300);
    assert.ok(s.fib.has('10.30.2.0/24'), 'stale route kept until End-of-RIB');
    await t2.session.send([endOfRib('ipv4-unicast', t2.session.encodeOptions!)]);
    await waitFor('stale route swept on End-of-RIB', () => !s.fib.has('10.30.2.0/24'));
    assert.deepEqual(s.fib.get('10.30.1.0/24'), [addr(3)]);
    assert.ok(!s.peerStatus(3).gracefulRestart);

    // Vanishes again and never returns: routes go when min(60, maxRestartTimeSec 2) expires.
    t2.socket!.destroy();
    await waitFor('S sees T2 down', () => s.peerStatus(3).state !== 'Established');
    await sleep(1_000);
    assert.ok(s.fib.has('10.30.1.0/24'), 'still kept within the restart time');
    await waitFor('restart timer expiry removes the routes', () => !s.fib.has('10.30.1.0/24'), 5_000);
    assert.equal(s.peerStatus(3).prefixesReceived, 0);
    await stopAll();
  });

  test('a restarting speaker sends End-of-RIB only after initialSyncDone(); R bit announced', async () => {
    const r = new Node(4, { restarting: true });
    const s = new Node(5);
    track(r, s);
    await r.speaker.start();
    await s.speaker.start();
    r.speaker.setPeers([r.peer(5)]);
    s.speaker.setPeers([s.peer(4)]);
    r.speaker.setLocalRoutes(['10.4.0.0/24']);
    s.speaker.initialSyncDone();
    const t = new TestPeer(6, 4);
    r.speaker.setPeers([r.peer(5), r.peer(6, { passive: true })]);
    trackPeer(t);
    t.session.start();
    await waitFor('S has R routes', () => s.fib.has('10.4.0.0/24'));
    await waitFor('T Established', () => t.session.state === 'Established');
    assert.equal(t.session.remoteOpen?.capabilities.gracefulRestart?.restarting, true);
    assert.equal(t.session.remoteOpen?.capabilities.gracefulRestart?.families[0]?.forwardingPreserved, true);
    await sleep(500);
    assert.deepEqual(s.peerStatus(4).endOfRibReceived, []);
    assert.equal(t.eor.size, 0);
    assert.deepEqual(r.peerStatus(5).endOfRibReceived, ['ipv4-unicast', 'ipv6-unicast']);
    r.speaker.initialSyncDone();
    await waitFor('S receives End-of-RIB', () => s.peerStatus(4).endOfRibReceived?.length === 2);
    await waitFor('T receives End-of-RIB', () => t.eor.size === 2);
    await stopAll();
  });

  test('route refresh: a request gets the table again between BoRR and EoRR; requestRefresh asks', async () => {
    const s = new Node(7);
    track(s);
    await s.speaker.start();
    s.speaker.setPeers([s.peer(8, { passive: true })]);
    s.speaker.setLocalRoutes(['10.7.1.0/24', '10.7.2.0/24', 'fd00:7::/64']);
    s.speaker.initialSyncDone();
    const t = new TestPeer(8, 7);
    trackPeer(t);
    t.session.start();
    await waitFor('T has the table and End-of-RIB', () => t.rib.size === 3 && t.eor.size === 2);
    assert.equal(t.announcements.length, 3);
    await t.session.send([encodeMessage({ type: 'route-refresh', afiSafi: 'ipv4-unicast', subtype: 0 }, t.session.encodeOptions!)]);
    await waitFor('EoRR', () => t.refreshes.some((m) => m.subtype === 2));
    assert.deepEqual(t.refreshes.map((m) => [m.afiSafi, m.subtype]), [['ipv4-unicast', 1], ['ipv4-unicast', 2]]);
    assert.equal(t.announcements.filter((p) => p.startsWith('10.7.')).length, 4, 'the IPv4 table was sent again');
    assert.equal(t.announcements.filter((p) => p.includes(':')).length, 1, 'IPv6 not resent');
    assert.ok(s.speaker.requestRefresh(`${addr(8)}:${PORT}`, 'ipv6-unicast'));
    await waitFor('T gets our request', () => t.refreshes.some((m) => m.subtype === 0));
    assert.equal(s.peerStatus(8).prefixesAdvertised, 3);
    await stopAll();
  });
});
