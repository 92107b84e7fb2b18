/**
 * BgpSpeaker against BIRD 2 on real network namespaces (never the machine's own), all nodes on
 * one bridge (10.201.0.0/24), each speaker a child process in its own namespace:
 *  (a) BIRD as route reflector with two routecat speaker clients: routes of one reach the other;
 *  (b) a routecat speaker as route reflector (clusterId) with two BIRD clients: client 1's routes
 *      appear in client 2 (`birdc show route`);
 *  (c) a raw peer sends a malformed UPDATE (bad ORIGIN value: treat-as-withdraw, session stays)
 *      and then one whose attribute length hides the NLRI (NOTIFICATION UPDATE Message Error),
 *      while a BIRD session on the same speaker stays Established with its routes.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { birdLabSkipReason } from '../helpers/bird.ts';
import { SpeakerLab, birdConf, jsonLines, speakerFib, speakerStatus, v4, v6, waitUntil } from '../helpers/speaker-lab.ts';
import type { SpeakerPeerConfig } from '../../src/bgp/speaker-api.ts';
import type { LabProcess } from '../helpers/netns.ts';

const skip = await birdLabSkipReason();

after(() => {
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(`rcspk-${process.pid}-`));
  assert.deepEqual(left, [], 'no namespaces of ours are left');
});

const ASN = 64512;

function speakerConfig(host: number, extra: { clusterId?: string } = {}) {
  return {
    asn: ASN,
    routerId: v4(host),
    ...extra,
    listen: { addresses: [v4(host)], port: 179 },
    nextHop: { ipv4: v4(host), ipv6: v6(host) },
    connectRetrySec: 1,
  };
}

function peer(host: number, self: number, extra: Partial<SpeakerPeerConfig> = {}): SpeakerPeerConfig {
  return { id: v4(host), address: v4(host), asn: ASN, kind: 'global', localAddress: v4(self), holdTimeSec: 30, ...extra };
}

function peerState(p: LabProcess, host: number): string | undefined {
  return speakerStatus(p)?.peers.find((x) => x.address === v4(host))?.state;
}

describe('BgpSpeaker with BIRD 2', { skip, timeout: 150_000, concurrency: 1 }, () => {
  describe('(a) BIRD route reflector, two routecat clients', { concurrency: 1 }, () => {
    const lab = new SpeakerLab();
    let s1: LabProcess;
    let s2: LabProcess;
    before(async () => {
      await lab.setup([11, 12, 21]);
      await lab.startBird(
        21,
        birdConf({
          host: 21,
          asn: ASN,
          neighbours: [
            { name: 'spk1', address: v4(11), asn: ASN, rrClient: true },
            { name: 'spk2', address: v4(12), asn: ASN, rrClient: true },
          ],
        }),
      );
      s1 = await lab.startSpeaker(11, { config: speakerConfig(11), peers: [peer(21, 11, { kind: 'reflector' })], local: ['10.65.11.0/26', 'fd00:65:11::/122'] });
      s2 = await lab.startSpeaker(12, { config: speakerConfig(12), peers: [peer(21, 12, { kind: 'reflector' })], local: ['10.65.12.0/26'] });
    });
    after(() => lab.cleanup());

    test("one client's routes reach the other through BIRD, with the original next hops", async () => {
      await waitUntil('BIRD: both clients Established', async () => /Established/.test(await lab.birdProtocol(21, 'spk1')) && /Established/.test(await lab.birdProtocol(21, 'spk2')), 30_000);
      await waitUntil('speaker 2 learns 10.65.11.0/26', () => speakerFib(s2).has('10.65.11.0/26'), 15_000);
      assert.deepEqual(speakerFib(s2).get('10.65.11.0/26'), [v4(11)]);
      await waitUntil('speaker 2 learns fd00:65:11::/122', () => speakerFib(s2).has('fd00:65:11::/122'), 15_000);
      assert.deepEqual(speakerFib(s2).get('fd00:65:11::/122'), [v6(11)]);
      await waitUntil('speaker 1 learns 10.65.12.0/26', () => speakerFib(s1).has('10.65.12.0/26'), 15_000);
      assert.deepEqual(speakerFib(s1).get('10.65.12.0/26'), [v4(12)]);
      // Status lines come every 250 ms: wait for one that reflects what the FIB lines showed.
      await waitUntil('speaker 2 status shows the routes', () => (speakerStatus(s2)?.peers[0]?.prefixesReceived ?? 0) >= 2, 5_000);
      const st = speakerStatus(s2)!;
      assert.equal(st.peers[0]?.state, 'Established');
      assert.ok((st.peers[0]?.prefixesReceived ?? 0) >= 2, JSON.stringify(st));
      assert.equal(st.peers[0]?.prefixesAdvertised, 1);
    });
  });

  describe('(b) routecat route reflector, two BIRD clients', { concurrency: 1 }, () => {
    const lab = new SpeakerLab();
    let rr: LabProcess;
    before(async () => {
      await lab.setup([11, 21, 22]);
      for (const [h, p] of [[21, '10.66.21.0/24'], [22, '10.66.22.0/24']] as const) {
        await lab.startBird(h, birdConf({ host: h, asn: ASN, static4: [p], neighbours: [{ name: 'rc', address: v4(11), asn: ASN }] }));
      }
      rr = await lab.startSpeaker(11, {
        config: speakerConfig(11, { clusterId: '10.201.255.1' }),
        peers: [peer(21, 11, { kind: 'rr-client', routeReflectorClient: true }), peer(22, 11, { kind: 'rr-client', routeReflectorClient: true })],
        local: ['10.65.11.0/26'],
      });
    });
    after(() => lab.cleanup());

    test("client 1's routes appear in client 2, reflected with ORIGINATOR_ID and CLUSTER_LIST", async () => {
      await waitUntil('both BIRD clients Established', async () => /Established/.test(await lab.birdProtocol(21, 'rc')) && /Established/.test(await lab.birdProtocol(22, 'rc')), 30_000);
      await waitUntil('BIRD 2 has 10.66.21.0/24', async () => (await lab.birdc(22, 'show route 10.66.21.0/24')).includes('10.66.21.0/24'), 15_000);
      const r = await lab.birdc(22, 'show route 10.66.21.0/24 all');
      assert.match(r, new RegExp(`via ${v4(21).replace(/\./g, '\\.')}`), r);
      assert.match(r, /BGP\.originator_id: 10\.201\.0\.21/, r);
      assert.match(r, /BGP\.cluster_list: 10\.201\.255\.1/, r);
      await waitUntil('BIRD 1 has 10.66.22.0/24', async () => (await lab.birdc(21, 'show route 10.66.22.0/24')).includes('10.66.22.0/24'), 15_000);
      const own = await lab.birdc(21, 'show route 10.65.11.0/26 all');
      assert.match(own, /via 10\.201\.0\.11/, own);
      await waitUntil('reflector FIB has both', () => speakerFib(rr).has('10.66.21.0/24') && speakerFib(rr).has('10.66.22.0/24'), 10_000);
      assert.deepEqual(speakerFib(rr).get('10.66.22.0/24'), [v4(22)]);
    });
  });

  describe('(c) malformed UPDATEs from one peer; the BIRD session is unaffected', { concurrency: 1 }, () => {
    const lab = new SpeakerLab();
    let spk: LabProcess;
    let raw: LabProcess;
    before(async () => {
      await lab.setup([11, 21, 31]);
      await lab.startBird(21, birdConf({ host: 21, asn: ASN, static4: ['10.66.21.0/24'], neighbours: [{ name: 'rc', address: v4(11), asn: ASN }] }));
      spk = await lab.startSpeaker(11, { config: speakerConfig(11), peers: [peer(21, 11), peer(31, 11, { passive: true })], local: ['10.65.11.0/26'] });
    });
    after(() => lab.cleanup());

    test('bad ORIGIN: treat-as-withdraw; NLRI not locatable: NOTIFICATION 3/1; BIRD stays up', async () => {
      await waitUntil('speaker learns BIRD route', () => speakerFib(spk).has('10.66.21.0/24'), 30_000);
      raw = lab.startRaw(31, { localAddress: v4(31), peerAddress: v4(11), asn: ASN, routerId: v4(31), prefixes: ['10.77.1.0/24', '10.77.2.0/24'], steps: ['good', 'bad-origin', 'bad-length'] });
      await raw.waitFor(/"established"/, 15_000);
      raw.child.kill('SIGUSR1');
      await waitUntil('raw routes installed', () => speakerFib(spk).has('10.77.1.0/24') && speakerFib(spk).has('10.77.2.0/24'), 10_000);
      assert.deepEqual(speakerFib(spk).get('10.77.1.0/24'), [v4(31)]);

      raw.child.kill('SIGUSR1');
      await waitUntil('bad ORIGIN withdraws 10.77.1.0/24', () => !speakerFib(spk).has('10.77.1.0/24'), 10_000);
      assert.ok(speakerFib(spk).has('10.77.2.0/24'), 'the other route stays');
      assert.equal(peerState(spk, 31), 'Established');
      assert.ok(!jsonLines(raw).some((l) => l.type === 'notification'));

      raw.child.kill('SIGUSR1');
      await raw.waitFor(/"notification"/, 10_000);
      const n = jsonLines(raw).find((l) => l.type === 'notification')!;
      assert.equal(n.code, 3, JSON.stringify(n));
      assert.equal(n.subcode, 1, JSON.stringify(n));
      await waitUntil('raw peer routes withdrawn', () => !speakerFib(spk).has('10.77.2.0/24'), 10_000);
      await waitUntil('speaker reports the error', () => /NOTIFICATION sent 3\/1/.test(speakerStatus(spk)?.peers.find((p) => p.address === v4(31))?.info ?? ''), 5_000);

      // BIRD's session never noticed.
      assert.match(await lab.birdProtocol(21, 'rc'), /Established/);
      assert.equal(peerState(spk, 21), 'Established');
      assert.equal(speakerStatus(spk)?.peers.find((p) => p.address === v4(21))?.establishedTransitions, 1);
      assert.deepEqual(speakerFib(spk).get('10.66.21.0/24'), [v4(21)]);
      assert.match(await lab.birdc(21, 'show route 10.65.11.0/26'), /10\.65\.11\.0\/26/);
    });
  });
});
