/**
 * The ACL dataplane against the real kernel, with real packets, for both backends.
 *
 * Each backend gets its own lab: a "host" namespace that plays the routecat host (the dataplane's
 * commands run inside it through `ip netns exec`), three workloads wired the Calico way (two on
 * tenant a, one on tenant b), one cali-prefixed interface without an endpoint, and an "ext"
 * namespace outside the pools for natOutgoing. Nothing runs in the root namespace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addWorkload,
  createLab,
  labSupport,
  prepareHost,
  sweepStaleNamespaces,
  type Lab,
  type LabProcess,
} from '../helpers/netns.ts';
import {
  createAclDataplane,
  policyChainName,
  type AclDataplane,
  type AclKind,
  type CommandRunner,
} from '../../src/agent/dataplane/acl.ts';
import { createExecRunner } from '../../src/agent/dataplane/exec.ts';
import type { CompiledPolicy, CompiledRule, DataplaneModel, EndpointPolicies, IpSet, LocalEndpoint, PoolInfo } from '../../src/agent/model.ts';

const LAB_PREFIX = 'rcacl';
const support = await labSupport();
const skip = support.ok ? false : support.reason;
if (support.ok) await sweepStaleNamespaces(LAB_PREFIX);

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

const W = {
  w1: { n: 1, iface: 'cali1', v4: '10.65.0.1', v6: 'fd00:65::1', tenant: 'a' },
  w2: { n: 2, iface: 'cali2', v4: '10.65.0.2', v6: 'fd00:65::2', tenant: 'a' },
  w3: { n: 3, iface: 'cali3', v4: '10.65.0.3', v6: 'fd00:65::3', tenant: 'b' },
} as const;
/** A cali-prefixed interface that never gets an endpoint. */
const STRAY = { iface: 'calix4', v4: '10.65.0.4', v6: 'fd00:65::4' };
const HOST_V4 = '192.168.255.1';
const EXT_V4 = '192.168.100.2';
const SPOOF_V4 = '10.65.0.99';

const rule = (action: CompiledRule['action'], match: CompiledRule['match'] = {}, index = 0): CompiledRule => ({ action, match, index });
const tcp = (port: number): CompiledRule['match'] => ({ protocol: 'tcp', dstPorts: [{ first: port, last: port }] });

function profile(tenant: string): CompiledPolicy {
  return {
    id: `pro/kns.tenant-${tenant}`,
    kind: 'Profile',
    name: `kns.tenant-${tenant}`,
    ingress: [rule('allow', { srcIpSets: [`s:tenant-${tenant}`] })],
    egress: [rule('allow')],
  };
}

function gnp(name: string, tier: string, ingress: CompiledRule[]): CompiledPolicy {
  return { id: `gnp/${tier}.${name}`, kind: 'GlobalNetworkPolicy', name: `${tier}.${name}`, tier, ingress, egress: [] };
}

const WEB_ONLY = gnp('web-only', 'security', [rule('allow', tcp(80))]);
const WEB_PASS = gnp('web-pass', 'security', [rule('allow', tcp(80)), rule('pass', tcp(8080), 1)]);
const PLATFORM = gnp('alt-http', 'default', [rule('allow', tcp(8080))]);
const PASS_SSH = gnp('pass-ssh', 'security', [rule('pass', tcp(22))]);

interface Scenario {
  /** Policies in W2's ingress tiers, by tier. */
  readonly w2Tiers?: readonly { tier: string; policies: CompiledPolicy[] }[];
  /** Extra source prefixes W1 may use, and extra members of tenant a's set. */
  readonly w1Spoof?: readonly string[];
  readonly tenantAExtra?: readonly string[];
  readonly natOutgoing?: boolean;
}

function buildModel(s: Scenario = {}): DataplaneModel {
  const tiers = s.w2Tiers ?? [];
  const policies = new Map<string, CompiledPolicy>();
  for (const p of [profile('a'), profile('b'), ...tiers.flatMap((t) => t.policies)]) policies.set(p.id, p);
  const endpoints = new Map<string, LocalEndpoint>();
  for (const [name, w] of Object.entries(W)) {
    const base: EndpointPolicies = { tiers: [], profiles: [`pro/kns.tenant-${w.tenant}`] };
    const ep: LocalEndpoint = {
      id: `wep/tenant-${w.tenant}/${name}`,
      type: 'workload',
      name,
      namespace: `tenant-${w.tenant}`,
      iface: w.iface,
      ipv4Nets: [`${w.v4}/32`],
      ipv6Nets: [`${w.v6}/128`],
      allowSpoofedSourcePrefixes: name === 'w1' ? [...(s.w1Spoof ?? [])] : [],
      labels: { tenant: w.tenant },
      ingress: name === 'w2' ? { tiers: tiers.map((t) => ({ tier: t.tier, policies: t.policies.map((p) => p.id) })), profiles: base.profiles } : base,
      egress: base,
    };
    endpoints.set(ep.id, ep);
  }
  const members = (tenant: string, v: 'v4' | 'v6'): string[] =>
    Object.values(W)
      .filter((w) => w.tenant === tenant)
      .map((w) => `${w[v]}/${v === 'v4' ? 32 : 128}`);
  const ipSets = new Map<string, IpSet>([
    ['s:tenant-a', { id: 's:tenant-a', source: 'tenant == "a"', ipv4: [...members('a', 'v4'), ...(s.tenantAExtra ?? [])].sort(), ipv6: members('a', 'v6') }],
    ['s:tenant-b', { id: 's:tenant-b', source: 'tenant == "b"', ipv4: members('b', 'v4'), ipv6: members('b', 'v6') }],
  ]);
  const pools: PoolInfo[] = [
    { name: 'default-ipv4-ippool', cidr: '10.65.0.0/16', natOutgoing: s.natOutgoing ?? false, disabled: false },
    { name: 'default-ipv6-ippool', cidr: 'fd00:65::/64', natOutgoing: false, disabled: false },
  ];
  return { hostname: 'lab-host', endpoints, policies, ipSets, pools, failsafeInbound: [], failsafeOutbound: [], problems: [] };
}

// ---------------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------------

interface Call {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly stdin?: string;
}

const SERVER = `
const net = require('node:net');
const ports = [22, 80, 8080];
let up = 0;
for (const p of ports) {
  net.createServer((s) => { s.on('error', () => {}); s.end('ok\\n'); }).listen(p, '::', () => { if (++up === ports.length) console.log('ready'); });
}
`;

for (const backend of ['iptables', 'nftables'] as const satisfies readonly AclKind[]) {
  describe(`ACL dataplane on the kernel: ${backend}`, { skip, concurrency: 1, timeout: 300_000 }, () => {
    let lab: Lab;
    let host = '';
    const ns: Record<'w1' | 'w2' | 'w3' | 'stray' | 'ext', string> = { w1: '', w2: '', w3: '', stray: '', ext: '' };
    const servers: LabProcess[] = [];
    const calls: Call[] = [];
    let runner: CommandRunner;
    let dp: AclDataplane;

    const ping = async (from: string, dst: string, opts: { src?: string; tries?: number } = {}): Promise<boolean> => {
      for (let i = 0; i < (opts.tries ?? 1); i++) {
        const args = ['-c1', '-W1', ...(opts.src ? ['-I', opts.src] : []), dst];
        const r = await lab.exec(from, 'ping', args, { timeoutMs: 5_000 });
        if (r.code === 0) return true;
      }
      return false;
    };
    const reachable = (from: string, dst: string, opts: { src?: string } = {}): Promise<boolean> => ping(from, dst, { ...opts, tries: 3 });
    /** 'open' when a TCP connection is made, 'timeout' when SYNs go unanswered, 'refused' on RST. */
    const connect = async (from: string, dst: string, port: number): Promise<'open' | 'timeout' | 'refused'> => {
      const r = await lab.exec(from, 'timeout', ['2', 'bash', '-c', `exec 3<>/dev/tcp/${dst}/${port}`], { timeoutMs: 6_000 });
      return r.code === 0 ? 'open' : r.code === 124 ? 'timeout' : 'refused';
    };
    const apply = (m: DataplaneModel, inSync = true) => dp.apply(m, { inSync });

    before(async () => {
      lab = createLab(LAB_PREFIX);
      host = await lab.addNs('host');
      await prepareHost(lab, host, { ipv4: HOST_V4, ipv6: 'fd00:ff::1' });
      for (const [name, w] of Object.entries(W)) {
        ns[name as 'w1'] = await addWorkload(lab, host, { name, hostIface: w.iface, ipv4: w.v4, ipv6: w.v6 });
      }
      ns.stray = await addWorkload(lab, host, { name: 'stray', hostIface: STRAY.iface, ipv4: STRAY.v4, ipv6: STRAY.v6 });
      // Outside world: knows nothing of 10.65/16, so only masqueraded traffic gets answers.
      ns.ext = await lab.addNs('ext');
      await lab.veth(host, 'ext0', ns.ext, 'eth0');
      await lab.sh(host, 'ip addr add 192.168.100.1/24 dev ext0 && ip link set ext0 up');
      await lab.sh(ns.ext, `ip addr add ${EXT_V4}/24 dev eth0 && ip link set eth0 up`);
      for (const w of ['w2', 'w3'] as const) {
        const p = lab.spawn(ns[w], process.execPath, ['-e', SERVER]);
        servers.push(p);
        await p.waitFor(/ready/, 10_000);
      }
      const real = createExecRunner({ prefix: ['ip', 'netns', 'exec', host], timeoutMs: 20_000 });
      runner = {
        run(cmd, args, stdin) {
          calls.push({ cmd, args, stdin });
          return real.run(cmd, args, stdin);
        },
      };
      dp = createAclDataplane(backend, { runner });
    });

    after(async () => {
      try {
        if (dp) await dp.cleanup();
      } finally {
        if (lab) await lab.cleanup();
      }
    });

    test('without our rules the lab is fully connected (wiring check)', async () => {
      assert.equal(await reachable(ns.w1, W.w2.v4), true, 'w1 -> w2');
      assert.equal(await reachable(ns.w1, W.w3.v4), true, 'w1 -> w3');
      assert.equal(await reachable(ns.w1, STRAY.v4), true, 'w1 -> stray');
      assert.equal(await reachable(ns.w1, W.w2.v6), true, 'w1 -> w2 over IPv6');
      assert.equal(await reachable(ns.w1, HOST_V4), true, 'w1 -> host');
      assert.equal(await connect(ns.w1, W.w3.v4, 22), 'open');
      assert.equal(await ping(ns.w1, EXT_V4), false, 'ext has no route back without NAT');
    });

    test('profiles: same tenant allowed, other tenant refused, unknown cali interface dropped', async () => {
      const stats = await apply(buildModel());
      assert.equal(stats.changed, true);
      assert.ok(stats.rulesWritten > 0 && stats.rulesWritten === stats.rulesTotal);
      assert.equal(await reachable(ns.w1, W.w2.v4), true, 'w1 -> w2 (tenant a)');
      assert.equal(await reachable(ns.w1, W.w2.v6), true, 'w1 -> w2 over IPv6');
      assert.equal(await connect(ns.w1, W.w2.v4, 22), 'open');
      assert.equal(await ping(ns.w1, W.w3.v4), false, 'w1 -> w3 (other tenant)');
      assert.equal(await ping(ns.w3, W.w1.v4), false, 'w3 -> w1 (other tenant)');
      assert.equal(await ping(ns.w1, W.w3.v6), false, 'w1 -> w3 over IPv6');
      assert.equal(await connect(ns.w1, W.w3.v4, 22), 'timeout');
      assert.equal(await ping(ns.w1, STRAY.v4), false, 'to an interface with no endpoint');
      assert.equal(await ping(ns.stray, W.w1.v4), false, 'from an interface with no endpoint');
      assert.equal(await ping(ns.w1, HOST_V4), false, 'workload -> host is dropped by default');
      assert.equal(await reachable(host, W.w1.v4), true, 'host -> workload is not policed');
    });

    test('re-applying the unchanged model writes nothing, also after a fresh read-back', async () => {
      calls.length = 0;
      const again = await apply(buildModel());
      assert.deepEqual([again.changed, again.rulesWritten, again.setsWritten], [false, 0, 0]);
      const fresh = createAclDataplane(backend, { runner });
      const stats = await fresh.apply(buildModel(), { inSync: true });
      assert.deepEqual([stats.changed, stats.rulesWritten, stats.setsWritten], [false, 0, 0]);
      const writes = calls.filter((c) => /restore$/.test(c.cmd) || c.args.includes('restore') || (c.cmd === 'nft' && c.args[0] === '-f'));
      assert.deepEqual(writes, []);
    });

    test('a tiered policy allowing only TCP 80 refuses 22 and ping', async () => {
      await apply(buildModel({ w2Tiers: [{ tier: 'security', policies: [WEB_ONLY] }] }));
      assert.equal(await connect(ns.w1, W.w2.v4, 80), 'open');
      assert.equal(await connect(ns.w1, W.w2.v6, 80), 'open');
      assert.equal(await connect(ns.w1, W.w2.v4, 22), 'timeout');
      assert.equal(await ping(ns.w1, W.w2.v4), false);
    });

    test('pass hands over to the next tier, and from the last tier to the profiles', async () => {
      await apply(buildModel({ w2Tiers: [{ tier: 'security', policies: [WEB_PASS] }, { tier: 'default', policies: [PLATFORM] }] }));
      assert.equal(await connect(ns.w1, W.w2.v4, 80), 'open', 'allowed by tier security');
      assert.equal(await connect(ns.w1, W.w2.v4, 8080), 'open', 'passed by security, allowed by default');
      assert.equal(await connect(ns.w1, W.w2.v4, 22), 'timeout', 'end of tier security');

      await apply(buildModel({ w2Tiers: [{ tier: 'security', policies: [PASS_SSH] }] }));
      assert.equal(await connect(ns.w1, W.w2.v4, 22), 'open', 'passed to the tenant profile');
      assert.equal(await connect(ns.w3, W.w2.v4, 22), 'timeout', 'passed, but the profile refuses tenant b');
      assert.equal(await connect(ns.w1, W.w2.v4, 80), 'timeout', 'end of tier security');
    });

    test('removing a policy rewrites only its chain and the chain that used it', async () => {
      const twoTiers = buildModel({ w2Tiers: [{ tier: 'security', policies: [WEB_PASS] }, { tier: 'default', policies: [PLATFORM] }] });
      await apply(twoTiers);
      calls.length = 0;
      const stats = await apply(buildModel({ w2Tiers: [{ tier: 'security', policies: [WEB_PASS] }] }));
      assert.equal(stats.changed, true);
      const gone = policyChainName(PLATFORM, 'ingress');
      const writes = calls.filter((c) => c.stdin !== undefined);
      if (backend === 'iptables') {
        assert.deepEqual(writes.map((c) => c.cmd), ['iptables-restore', 'ip6tables-restore']);
        for (const w of writes) {
          const declared = [...(w.stdin ?? '').matchAll(/^:(\S+)/gm)].map((m) => m[1]).sort();
          assert.deepEqual(declared, [gone, 'rc-tw-cali2'].sort());
          assert.match(w.stdin ?? '', new RegExp(`^-X ${gone}$`, 'm'));
          assert.deepEqual(new Set([...(w.stdin ?? '').matchAll(/^-A (\S+)/gm)].map((m) => m[1])), new Set(['rc-tw-cali2']));
        }
        const saved = await lab.must(host, 'iptables-save', ['-t', 'filter']);
        assert.doesNotMatch(saved, new RegExp(gone));
      } else {
        assert.equal(writes.length, 1);
        const lines = (writes[0].stdin ?? '').trim().split('\n');
        assert.deepEqual(
          lines.filter((l) => !l.startsWith('add rule')).sort(),
          [`delete chain inet routecat ${gone}`, `flush chain inet routecat ${gone}`, 'flush chain inet routecat rc-tw-cali2'].sort(),
        );
        assert.ok(lines.filter((l) => l.startsWith('add rule')).every((l) => l.startsWith('add rule inet routecat rc-tw-cali2 ')));
        const listed = await lab.must(host, 'nft', ['list', 'table', 'inet', 'routecat']);
        assert.doesNotMatch(listed, new RegExp(gone));
      }
      assert.equal(await connect(ns.w1, W.w2.v4, 80), 'open');
      assert.equal(await connect(ns.w1, W.w2.v4, 8080), 'open', 'passed to the profile now');
    });

    test('spoofed source addresses are dropped unless allowed', async () => {
      await lab.sh(ns.w1, `ip addr add ${SPOOF_V4}/32 dev eth0`);
      await lab.sh(host, `ip route add ${SPOOF_V4}/32 dev ${W.w1.iface}`);
      await apply(buildModel({ w1Spoof: [`${SPOOF_V4}/32`], tenantAExtra: [`${SPOOF_V4}/32`] }));
      assert.equal(await reachable(ns.w1, W.w2.v4, { src: SPOOF_V4 }), true, 'allowed spoofed prefix');
      await apply(buildModel({ tenantAExtra: [`${SPOOF_V4}/32`] }));
      assert.equal(await ping(ns.w1, W.w2.v4, { src: SPOOF_V4 }), false, 'spoofed source dropped');
      assert.equal(await reachable(ns.w1, W.w2.v4), true, 'own address still fine');
    });

    test('natOutgoing masquerades traffic leaving the pools', async () => {
      await apply(buildModel({ natOutgoing: true }));
      assert.equal(await reachable(ns.w1, EXT_V4), true, 'masqueraded to ext');
      assert.equal(await reachable(ns.w1, W.w2.v4), true, 'inside the pool: not masqueraded, still allowed');
      await apply(buildModel({ natOutgoing: false }));
      assert.equal(await ping(ns.w1, EXT_V4), false);
    });

    test('an all-interfaces host endpoint (interfaceName *) polices traffic to the host, except failsafe ports and loopback', async () => {
      const hostServer = lab.spawn(host, process.execPath, ['-e', `const net=require('node:net');let up=0;for(const p of [22,8088])net.createServer((s)=>{s.on('error',()=>{});s.end('ok\\n')}).listen(p,'::',()=>{if(++up===2)console.log('ready')})`]);
      servers.push(hostServer);
      await hostServer.waitFor(/ready/, 10_000);
      assert.equal(await connect(ns.ext, '192.168.100.1', 8088), 'open', 'before: the host is open');
      const m = buildModel();
      const hep: LocalEndpoint = {
        id: 'hep/lab-host-any', type: 'host', name: 'lab-host-any', iface: '*', ipv4Nets: [], ipv6Nets: [], allowSpoofedSourcePrefixes: [], labels: {},
        ingress: { tiers: [], profiles: [] }, egress: { tiers: [], profiles: [] },
      };
      const withHep: DataplaneModel = { ...m, endpoints: new Map([...m.endpoints, [hep.id, hep]]), failsafeInbound: [{ protocol: 'tcp', port: 22 }] };
      await apply(withHep);
      assert.equal(await connect(ns.ext, '192.168.100.1', 8088), 'timeout', 'no policy allows it: dropped');
      assert.equal(await ping(ns.ext, '192.168.100.1'), false);
      assert.equal(await connect(ns.ext, '192.168.100.1', 22), 'open', 'failsafe port');
      assert.equal(await connect(host, '127.0.0.1', 8088), 'open', 'loopback is not policed');
      assert.equal(await reachable(ns.w1, W.w2.v4), true, 'forwarded workload traffic is not host endpoint traffic');
      await apply(buildModel());
      assert.equal(await connect(ns.ext, '192.168.100.1', 8088), 'open', 'the host endpoint gone: open again');
    });

    test('inSync false keeps stale chains; cleanup removes everything of ours', async () => {
      await apply(buildModel({ w2Tiers: [{ tier: 'security', policies: [WEB_ONLY] }] }));
      const stale = policyChainName(WEB_ONLY, 'ingress');
      await apply(buildModel(), false);
      const listing = async (): Promise<string> =>
        backend === 'iptables'
          ? (await lab.must(host, 'iptables-save', [])) + (await lab.must(host, 'ip6tables-save', [])) + (await lab.must(host, 'ipset', ['list', '-n']))
          : await lab.must(host, 'nft', ['list', 'ruleset']);
      assert.match(await listing(), new RegExp(stale), 'not deleted while out of sync');
      await dp.cleanup();
      const after = await listing();
      assert.doesNotMatch(after, /rc-|routecat|^rc\d/m);
      assert.equal(await reachable(ns.w1, W.w3.v4), true, 'open again');
    });
  });
}
