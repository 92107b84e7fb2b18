/**
 * routecat's BGP session against BIRD 2, each in its own network namespace (never the machine's
 * own), joined by a veth: the session reaches Established on both ends (birdc says so), routecat
 * receives BIRD's static prefixes and BIRD installs the prefixes routecat announces, over IPv4 and
 * (MP-BGP) IPv6. iBGP in AS 64512 like Calico's node mesh, with routecat connecting and listening;
 * eBGP with routecat passive; a shutdown communication that BIRD reports.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BgpLab, BIRD_V4, BIRD_V6, RC_V4, RC_V6, birdLabSkipReason } from '../helpers/bird.ts';


const skip = await birdLabSkipReason();

after(() => {
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(`rcbgp-${process.pid}-`));
  assert.deepEqual(left, [], 'no namespaces of ours are left');
});

const BIRD4 = ['10.66.1.0/24', '10.66.2.0/24'];
const BIRD6 = ['fd00:66:1::/64', 'fd00:66:2::/64'];
const RC4 = ['10.65.0.0/26', '10.65.7.0/26'];
const RC6 = ['fd00:65::/122'];

async function checkRoutesBothWays(lab: BgpLab): Promise<void> {
  await lab.waitUntil('BIRD says Established', async () => /Established/.test(await lab.birdProtocolState()), 20_000);
  await lab.waitUntil('routecat Established', () => lab.lines().some((l) => l.type === 'established'), 5_000);
  await lab.waitUntil(`routecat receives ${[...BIRD4, ...BIRD6]}`, () => [...BIRD4, ...BIRD6].every((p) => lab.received().has(p)), 10_000);
  for (const p of [...RC4, ...RC6]) {
    await lab.waitUntil(`BIRD has ${p}`, async () => (await lab.birdc(`show route ${p} protocol rc`)).includes(p), 10_000);
  }
  const r4 = await lab.birdc(`show route ${RC4[0]} all`);
  assert.match(r4, new RegExp(`via ${RC_V4.replace(/\./g, '\\.')}`), r4);
  const r6 = await lab.birdc(`show route ${RC6[0]} all`);
  assert.match(r6, /via fd00:200::1/, r6);
  const upd = lab.lines().filter((l) => l.type === 'update' && (l.nlri as string[]).includes(BIRD4[0]!));
  assert.equal(upd[0]?.nextHop, BIRD_V4);
  const upd6 = lab.lines().filter((l) => l.type === 'update' && (l.nlri as string[]).includes(BIRD6[0]!));
  assert.equal(upd6[0]?.nextHop, BIRD_V6);
}

describe('BGP interop with BIRD 2', { skip, timeout: 120_000, concurrency: 1 }, () => {
  describe('iBGP AS 64512 (Calico node mesh): routecat connects and listens', { concurrency: 1 }, () => {
    const lab = new BgpLab();
    before(async () => {
      await lab.setup();
      await lab.startBird({
        routerId: BIRD_V4,
        localAs: 64512,
        peerAs: 64512,
        localAddress: BIRD_V4,
        peerAddress: RC_V4,
        static4: BIRD4,
        static6: BIRD6,
      });
      const child = lab.startChild({
        localAs: 64512,
        peerAs: 64512,
        localId: RC_V4,
        localAddress: RC_V4,
        peerAddress: BIRD_V4,
        passive: false,
        families: ['ipv4-unicast', 'ipv6-unicast'],
        announce4: { prefixes: RC4, nextHop: RC_V4 },
        announce6: { prefixes: RC6, nextHop: RC_V6 },
        shutdownText: 'routecat node drained',
      });
      await child.waitFor(/"listening"/, 20_000);
    });
    after(async () => {
      await lab.cleanup();
    });

    test('Established; routes both ways, IPv4 and IPv6', async () => {
      await checkRoutesBothWays(lab);
      const est = lab.lines().find((l) => l.type === 'established')!;
      assert.equal(est.peerId, BIRD_V4);
      assert.equal(est.peerAs, 64512);
      assert.deepEqual((est.families as string[]).sort(), ['ipv4-unicast', 'ipv6-unicast']);
      assert.equal(est.holdTimeSec, 30);
      assert.ok(!lab.lines().some((l) => l.type === 'down'), JSON.stringify(lab.lines()));
    });

    test('stop: BIRD gets Cease with the shutdown communication and withdraws our routes', async () => {
      await lab.stopChild();
      const stopped = lab.lines().find((l) => l.type === 'stopped');
      assert.ok(stopped, JSON.stringify(lab.lines()));
      await lab.waitUntil('BIRD leaves Established', async () => !/Established/.test(await lab.birdProtocolState()), 10_000);
      const all = await lab.birdc('show protocols all rc');
      assert.match(all, /Administrative shutdown/i, all);
      assert.match(all, /routecat node drained/, all);
      await lab.waitUntil('BIRD drops our routes', async () => !(await lab.birdc(`show route ${RC4[0]}`)).includes(RC4[0]!), 10_000);
    });
  });

  describe('eBGP AS 64512 <-> AS 64600: routecat passive, BIRD connects', { concurrency: 1 }, () => {
    const lab = new BgpLab();
    before(async () => {
      await lab.setup();
      await lab.startBird({
        routerId: BIRD_V4,
        localAs: 64600,
        peerAs: 64512,
        localAddress: BIRD_V4,
        peerAddress: RC_V4,
        static4: BIRD4,
        static6: BIRD6,
      });
      const child = lab.startChild({
        localAs: 64512,
        peerAs: 64600,
        localId: RC_V4,
        localAddress: RC_V4,
        peerAddress: BIRD_V4,
        passive: true,
        families: ['ipv4-unicast', 'ipv6-unicast'],
        announce4: { prefixes: RC4, nextHop: RC_V4 },
        announce6: { prefixes: RC6, nextHop: RC_V6 },
      });
      await child.waitFor(/"listening"/, 20_000);
    });
    after(async () => {
      await lab.cleanup();
    });

    test('Established (incoming); routes both ways with BIRD AS in the path', async () => {
      await checkRoutesBothWays(lab);
      const est = lab.lines().find((l) => l.type === 'established')!;
      assert.equal(est.direction, 'incoming');
      assert.equal(est.peerAs, 64600);
      const upd = lab.lines().find((l) => l.type === 'update' && (l.nlri as string[]).includes(BIRD4[0]!))!;
      assert.deepEqual(upd.asPath, [{ type: 'sequence', asns: [64600] }]);
      const r = await lab.birdc(`show route ${RC4[0]} all`);
      assert.match(r, /BGP\.as_path: 64512/, r);
    });
  });
});
