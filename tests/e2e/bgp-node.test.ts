/**
 * `routecat node` with BGP on, and `routecat reflector`, end to end: host namespaces on one fabric
 * with NO static routes between them, a real etcd, two routecat nodes and one host running BIRD 2
 * configured like calico/node's BIRD (iBGP AS 64512 full mesh, the host's workload routes learned
 * from the kernel and exported, BGP routes programmed into the kernel). Every reachability check is
 * a real ping between workloads. Covers: the mesh (IPv4 and IPv6, proto-193 routes), a new global
 * BGPPeer resetting only its own session, `routecat status`, graceful restart of a node agent
 * (SIGKILL, restart: no packet lost), and route reflection via `routecat reflector` with the mesh
 * disabled (Calico's route reflector recipe). Serial; namespaces are `rcbn-*`, removed afterwards.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { waitFor } from '../helpers/wait.ts';
import { NodeLab, type Host, type HostDef } from '../helpers/node-lab.ts';
import type { LabProcess } from '../helpers/netns.ts';
import { birdLabSkipReason } from '../helpers/bird.ts';
import { fetchControl } from '../../src/cli/status.ts';
import { main } from '../../src/cli/main.ts';
import type { BgpNodeStatus } from '../../src/agent/bgp-node.ts';
import type { PeerStatus } from '../../src/bgp/speaker-api.ts';

const skip = await birdLabSkipReason();
const ROOT = resolve(import.meta.dirname, '../..');

const A = { name: 'a', ip: '10.201.0.1', ip6: 'fd00:201::1', block: '10.65.1.0/24', block6: 'fd00:65:1::/64' };
const B = { name: 'b', ip: '10.201.0.2', ip6: 'fd00:201::2', block: '10.65.2.0/24', block6: 'fd00:65:2::/64' };
const C = { name: 'c', ip: '10.201.0.3', ip6: 'fd00:201::3', block: '10.67.0.0/24', block6: 'fd00:67::/64' };
const RR_IP = '10.201.0.10';
const WA = '10.65.1.2';
const WA6 = 'fd00:65:1::2';
const WB = '10.65.2.2';
const WB6 = 'fd00:65:2::2';
const WC = '10.67.0.2';

/** calico/node's BIRD, in bird2 syntax: kernel routes learned and exported to the mesh, BGP routes to the kernel. */
function birdConf(): string {
  const mesh = [A, B]
    .map((n) => `protocol bgp Mesh_${n.ip.replace(/\./g, '_')} from bgp_template {\n  neighbor ${n.ip} as 64512;\n  source address ${C.ip};\n}`)
    .join('\n');
  return `log stderr all;
router id ${C.ip};
filter calico_export_to_bgp_peers {
  if ( net ~ [ 10.67.0.0/16+ ] ) then accept;
  reject;
}
protocol device { scan time 2; }
protocol direct { ipv4; interface -"cali*", "*"; }
protocol kernel {
  ipv4 { import all; export where source = RTS_BGP; };
  learn;
  persist;
  scan time 2;
  graceful restart;
  merge paths on;
}
template bgp bgp_template {
  local as 64512;
  direct;
  graceful restart;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 { import all; export filter calico_export_to_bgp_peers; next hop self; gateway direct; };
}
${mesh}
`;
}

describe('BGP on routecat nodes, with BIRD and a route reflector', { skip, timeout: 240_000, concurrency: 1 }, () => {
  let lab: NodeLab;
  let bird: LabProcess | undefined;
  let rr: LabProcess | undefined;
  const host = (n: string): Host => lab.hosts.get(n)!;
  const bgpStatus = async (n: string, runDir = host(n).runDir): Promise<BgpNodeStatus> => (await fetchControl(runDir, '/bgp', 2_000)) as BgpNodeStatus;
  const peer = async (n: string, id: string, runDir?: string): Promise<PeerStatus | undefined> => (await bgpStatus(n, runDir)).speaker?.peers.find((p) => p.id === id);
  const established = async (n: string, ids: readonly string[], runDir?: string) => {
    const s = await bgpStatus(n, runDir);
    return ids.every((id) => s.speaker?.peers.some((p) => p.id === id && p.state === 'Established')) ? s : undefined;
  };
  const routes193 = async (n: string, v6 = false) => lab.lab.must(host(n).ns, 'ip', [v6 ? '-6' : '-4', 'route', 'show', 'proto', '193']);
  const logs = (tail = 2500) => [...lab.hosts.values()].filter((h) => h.agent).map((h) => `--- ${h.name}:\n${h.agent!.output().slice(-tail)}`).join('\n') + (rr ? `\n--- rr:\n${rr.output().slice(-tail)}` : '');
  const agentArgs = (h: HostDef) => ['--ip6', h.ip6, '--log-level', 'info'];
  const pingFrom = (from: string, to: string, v6 = false) => lab.eventually(() => lab.ping(from, to, { v6 }), 10);

  before(async () => {
    lab = await NodeLab.create('rcbn', 'iptables');
    await lab.addHosts([A, B, C], { staticRoutes: false });
    await lab.apply({
      apiVersion: 'projectcalico.org/v3',
      kind: 'Profile',
      metadata: { name: 'open' },
      spec: { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] },
    });
    // The BIRD host is a Calico node too: its Node resource puts it in the routecat nodes' mesh.
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'Node', metadata: { name: 'c' }, spec: { bgp: { ipv4Address: `${C.ip}/24` } } });
    await lab.addWorkload({ name: 'wa', host: 'a', ipv4: WA, ipv6: WA6, labels: {}, profiles: ['open'] });
    await lab.addWorkload({ name: 'wb', host: 'b', ipv4: WB, ipv6: WB6, labels: {}, profiles: ['open'] });
    const wc = await lab.addWorkload({ name: 'wc', host: 'c', ipv4: WC, labels: {}, profiles: ['open'] });
    // What calico/node's Felix does on the BIRD host (no routecat agent there).
    await lab.lab.sh(host('c').ns, [
      'sysctl -qw net.ipv4.ip_forward=1',
      `sysctl -qw net.ipv4.conf.${wc.iface}.proxy_arp=1 net.ipv4.neigh.${wc.iface}.proxy_delay=0`,
      `ip route add ${WC}/32 dev ${wc.iface}`,
    ].join(' && '));
    const conf = join(lab.tmpDir, 'bird.conf');
    writeFileSync(conf, birdConf());
    const check = await lab.lab.exec(host('c').ns, 'bird', ['-p', '-c', conf]);
    assert.equal(check.code, 0, `bird.conf: ${check.stderr}`);
    bird = lab.lab.spawn(host('c').ns, 'bird', ['-f', '-c', conf, '-s', join(lab.tmpDir, 'bird.ctl'), '-P', join(lab.tmpDir, 'bird.pid')]);
    lab.startAgent('a', agentArgs(A), { bgp: true });
    lab.startAgent('b', agentArgs(B), { bgp: true });
    await lab.waitApplied('0', 30_000);
  });

  after(async () => {
    // RCBN_LOGS=<file>: keep every process's output for reading afterwards.
    if (process.env.RCBN_LOGS && lab) writeFileSync(process.env.RCBN_LOGS, `${logs(200_000)}\n--- bird:\n${bird?.output().slice(-5000) ?? ''}\n`);
    await rr?.kill();
    await bird?.kill();
    await lab?.cleanup();
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`rcbn-${process.pid}-`));
    assert.deepEqual(left, [], 'no namespaces of ours are left');
  });

  test('mesh: routes learned over BGP (proto 193, no static routes) carry pings between routecat and BIRD hosts', async () => {
    await waitFor('a Established with b (v4, v6) and the BIRD host', () => established('a', [B.ip, B.ip6, C.ip]), 30_000, logs);
    await waitFor('b Established with a and the BIRD host', () => established('b', [A.ip, A.ip6, C.ip]), 10_000, logs);
    await waitFor(`b's kernel routes ${WA} and ${WC}`, async () => {
      const r = await routes193('b');
      return r.includes(`${WA} via ${A.ip}`) && r.includes(`${WC} via ${C.ip}`);
    }, 15_000, logs);
    const static4 = await lab.lab.must(host('b').ns, 'ip', ['-4', 'route', 'show', 'proto', 'boot']);
    assert.equal(static4.trim(), '', 'no static routes on the routecat hosts');
    assert.ok(await pingFrom('wb', WA), 'wb -> wa over BGP routes');
    assert.ok(await pingFrom('wa', WB), 'wa -> wb');
    assert.ok(await pingFrom('wa', WC), 'wa -> the BIRD host workload');
    assert.ok(await pingFrom('wc', WB), 'the BIRD host workload -> wb');
    const birdRoutes = await lab.lab.must(host('c').ns, 'ip', ['-4', 'route', 'show', 'proto', 'bird']);
    assert.match(birdRoutes, new RegExp(`${WA.replace(/\./g, '\\.')} via ${A.ip.replace(/\./g, '\\.')}`));
  });

  test('mesh over IPv6: /128 routes between routecat hosts, ping6', async () => {
    await waitFor(`b's IPv6 route to ${WA6}`, async () => (await routes193('b', true)).includes(`${WA6} via ${A.ip6}`), 15_000, logs);
    assert.ok(await pingFrom('wb', WA6, true), 'wb -> wa over IPv6');
  });

  test('service ranges in BGPConfiguration reach the BIRD host from both routecat nodes (ECMP), and go when removed', async () => {
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'BGPConfiguration', metadata: { name: 'default' }, spec: { serviceClusterIPs: [{ cidr: '10.96.0.0/12' }] } });
    const birdRoute = () => lab.lab.must(host('c').ns, 'ip', ['-4', 'route', 'show', '10.96.0.0/12']);
    const r = await waitFor('10.96.0.0/12 on the BIRD host via a and b', async () => {
      const text = await birdRoute();
      return text.includes(`via ${A.ip}`) && text.includes(`via ${B.ip}`) ? text : undefined;
    }, 20_000, logs);
    assert.match(r, /nexthop via/, `one ECMP route: ${r}`);
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'BGPConfiguration', metadata: { name: 'default' }, spec: {} });
    await waitFor('10.96.0.0/12 withdrawn', async () => (await birdRoute()).trim() === '', 20_000, logs);
  });

  test('routecat status: IPv4/IPv6 BGP status tables with Established peers and prefix counts; -o json', async () => {
    let out = '';
    const run = (args: string[]) => main(['routecat', 'status', '--run-dir', host('a').runDir, ...args], {}, { out: (t) => (out += `${t}\n`), err: (t) => (out += `${t}\n`), readStdin: async () => '' });
    assert.equal(await run([]), 0, out);
    assert.match(out, /IPv4 BGP status/);
    assert.match(out, /IPv6 BGP status/);
    const row = (addr: string) => out.split('\n').find((l) => l.startsWith(`| ${addr} `))?.split('|').map((c) => c.trim());
    const toB = row(B.ip)!;
    assert.deepEqual([toB[2], toB[3]], ['node-to-node mesh', 'Established'], out);
    assert.ok(Number(toB[6]) >= 1 && Number(toB[7]) >= 1, `received/advertised counts: ${out}`);
    const toC = row(C.ip)!;
    assert.equal(toC[3], 'Established');
    assert.equal(toC[6], '1', 'the BIRD host sends its workload route');
    assert.equal(row(B.ip6)![3], 'Established');
    out = '';
    assert.equal(await run(['-o', 'json']), 0);
    const doc = JSON.parse(out) as { bgp: BgpNodeStatus; node: string };
    assert.equal(doc.node, 'a');
    assert.ok(doc.bgp.speaker!.peers.length >= 3);
    const metrics = await lab.lab.sh(host('a').ns, 'exec 3<>/dev/tcp/127.0.0.1/9091 && printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3', { timeoutMs: 5_000 });
    assert.match(metrics, /routecat_bgp_peers\{state="Established"\} [3-9]/);
    assert.match(metrics, /routecat_bgp_routes\{afi="ipv4-unicast"\} [1-9]/);
  });

  test('a new global BGPPeer starts only its own session: the mesh sessions are untouched', async () => {
    const before = await bgpStatus('a');
    const sinceOf = (s: BgpNodeStatus) => Object.fromEntries((s.speaker?.peers ?? []).map((p) => [p.id, `${p.state}@${p.since}`]));
    const was = sinceOf(before);
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'BGPPeer', metadata: { name: 'tor' }, spec: { peerIP: '10.201.0.254', asNumber: 65000 } });
    const after1 = await waitFor('the tor peer on a', async () => ((await peer('a', '10.201.0.254')) ? bgpStatus('a') : undefined), 10_000, logs);
    const now = sinceOf(after1);
    for (const id of [B.ip, B.ip6, C.ip]) assert.equal(now[id], was[id], `session ${id} untouched`);
    assert.equal(after1.speaker!.peers.find((p) => p.id === '10.201.0.254')!.kind, 'global');
    await lab.remove('BGPPeer', 'tor');
    await waitFor('the tor peer gone', async () => !(await peer('a', '10.201.0.254')), 10_000, logs);
    assert.deepEqual(Object.fromEntries(Object.entries(sinceOf(await bgpStatus('a'))).filter(([id]) => id !== '10.201.0.254')), was);
  });

  // SIGKILL is a crash; SIGTERM is what systemd or an upgrade sends, and must not withdraw routes either.
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    test(`graceful restart: ${signal} and restart node a while b pings a's workload: no packet lost`, async () => {
      const ping = lab.lab.spawn(lab.workloads.get('wb')!.ns, 'ping', ['-i', '0.2', '-c', '60', '-W', '1', WA]);
      await new Promise((r) => setTimeout(r, 1_000));
      await lab.stopAgent('a', { signal });
      const kept = await routes193('a');
      assert.ok(kept.includes(`${WB} via ${B.ip}`), `a's learned routes stay in the kernel: ${kept}`);
      lab.startAgent('a', agentArgs(A), { bgp: true });
      const s = await waitFor('a restarted with graceful restart', async () => {
        const st = await bgpStatus('a');
        return st.speaker ? st : undefined;
      }, 20_000, logs);
      assert.equal(s.restarting, true, 'restart detected from the routes in the kernel');
      await waitFor('b Established with a again', () => established('b', [A.ip]), 30_000, logs);
      await waitFor('a swept and synced', async () => (await bgpStatus('a')).fibSynced, 35_000, logs);
      await ping.waitFor(/packet loss/, 30_000);
      const m = /(\d+) packets transmitted, (\d+) received/.exec(ping.output());
      assert.ok(m, ping.output());
      assert.equal(m[2], m[1], `no loss during the restart: ${ping.output()}\n${logs(6000)}`);
      assert.ok((await routes193('a')).includes(`${WB} via ${B.ip}`), 'the route is confirmed, not swept');
      assert.ok(await pingFrom('wa', WC), 'and the BIRD host is reachable again');
    });
  }

  test('route reflector: mesh off, both nodes clients of `routecat reflector`; routes propagate through it', async () => {
    const rrNs = await lab.lab.addNs('rr');
    await lab.lab.veth(rrNs, 'eth0', lab.fabricNs, 'p-rr');
    await lab.lab.sh(lab.fabricNs, 'ip link set p-rr master br0 && ip link set p-rr up');
    await lab.lab.sh(rrNs, `ip link set eth0 up && ip addr add ${RR_IP}/24 dev eth0`);
    // Calico's recipe: label the reflector's Node, peer every node with the labelled ones, mesh off.
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'Node', metadata: { name: 'rr', labels: { 'route-reflector': 'true' } }, spec: { bgp: { ipv4Address: `${RR_IP}/24` } } });
    const rrRun = join(lab.tmpDir, 'rr');
    rr = lab.lab.spawn(rrNs, process.execPath, [
      '--import', 'tsx', join(ROOT, 'src/main.ts'), 'reflector',
      '--name', 'rr', '--ip', RR_IP, '--etcd-endpoints', lab.etcd.unixEndpoint, '--run-dir', rrRun,
    ]);
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'BGPPeer', metadata: { name: 'peer-with-route-reflectors' }, spec: { nodeSelector: 'all()', peerSelector: "route-reflector == 'true'" } });
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'BGPConfiguration', metadata: { name: 'default' }, spec: { nodeToNodeMeshEnabled: false } });
    const rrs = await waitFor('the reflector Established with a and b', () => established('rr', [A.ip, B.ip], rrRun), 30_000, logs);
    assert.equal(rrs.speaker!.clusterId, RR_IP);
    assert.deepEqual(rrs.speaker!.peers.filter((p) => p.id === A.ip || p.id === B.ip).map((p) => p.kind), ['rr-client', 'rr-client']);
    await waitFor('a has only the reflector', async () => {
      const s = await established('a', [RR_IP]);
      return s && !s.speaker!.peers.some((p) => p.id === B.ip) ? s : undefined;
    }, 15_000, logs);
    const toRr = (await peer('a', RR_IP))!;
    assert.equal(toRr.kind, 'reflector');
    await waitFor(`b's route to ${WA} via a, learned from the reflector`, async () => {
      const p = await peer('b', RR_IP);
      return (p?.prefixesReceived ?? 0) >= 1 && (await routes193('b')).includes(`${WA} via ${A.ip}`);
    }, 20_000, logs);
    assert.ok(await pingFrom('wb', WA), 'wb -> wa via reflected routes');
    assert.ok(await pingFrom('wa', WB), 'wa -> wb');
    let out = '';
    assert.equal(await main(['routecat', 'status', '--run-dir', rrRun], {}, { out: (t) => (out += t), err: (t) => (out += t), readStdin: async () => '' }), 0);
    assert.match(out, /routecat reflector 'rr'/);
    assert.match(out, /route reflector client \| Established/);
  });

  test('clean stop: SIGINT on node b closes its sessions at once (Cease), its kernel routes stay', async () => {
    await lab.stopAgent('b', { signal: 'SIGINT' });
    const rrRun = join(lab.tmpDir, 'rr');
    const p = await waitFor('the reflector sees b go', async () => {
      const st = await peer('rr', B.ip, rrRun);
      return st && st.state !== 'Established' ? st : undefined;
    }, 5_000, logs);
    assert.ok(p.info.length > 0, `the reflector says why: ${JSON.stringify(p)}`);
    assert.ok((await routes193('b')).includes(`${WA} via ${A.ip}`), 'b\'s BGP routes stay in the kernel');
  });
});
