/**
 * Benchmarks of the node agent (issue 3), each printed beside a reference measured in the same run:
 *  1. cold start with N local endpoints and P policies: agent start -> all routes and rules in the
 *     kernel, against the kernel's floor (one `ip -batch` of the same routes; one restore of the
 *     same rules and sets into an empty namespace);
 *  2. one endpoint added among N: etcd write -> its route and rules programmed (p50, p99);
 *  3. per-packet cost: iperf3 between two workloads with P policies applying vs none.
 * Everything runs in throwaway network namespaces against a throwaway etcd.
 *
 *   node --import tsx scripts/bench-node.ts [--dataplane iptables|nftables] [--sizes 1000,10000]
 *        [--policies 1000] [--adds 50] [--iperf-seconds 5] [--skip-iperf]
 */
import { existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connectEtcd, type Etcd3 } from '../src/datastore/etcd.ts';
import { fetchControl } from '../src/cli/status.ts';
import { createLab, type Lab, type LabProcess } from '../tests/helpers/netns.ts';
import { startEtcd, type EtcdServer } from '../tests/helpers/etcd.ts';
import { NodeLab } from '../tests/helpers/node-lab.ts';
import { recordFigures } from './bench-record.ts';

const ROOT = resolve(import.meta.dirname, '..');
const P = '/calico/resources/v3/projectcalico.org/';
const { values: opts } = parseArgs({
  options: {
    dataplane: { type: 'string', default: 'iptables' },
    sizes: { type: 'string', default: '1000,10000' },
    policies: { type: 'string', default: '1000' },
    adds: { type: 'string', default: '50' },
    'iperf-seconds': { type: 'string', default: '5' },
    'skip-iperf': { type: 'boolean', default: false },
  },
});
const dataplane = opts.dataplane as 'iptables' | 'nftables';
const POLICIES = Number(opts.policies);

const ms = (x: number) => `${x.toFixed(0)} ms`;
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

function agentCommand(): { cmd: string; args: string[]; what: string } {
  const bin = join(ROOT, 'dist/routecat');
  if (existsSync(bin)) return { cmd: bin, args: [], what: 'dist/routecat' };
  return { cmd: process.execPath, args: ['--import', 'tsx', join(ROOT, 'src/main.ts')], what: 'sources via tsx (run npm run build for the binary)' };
}

const ifaceName = (i: number) => `calib${i}`;
const ipOf = (i: number) => `10.${64 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`;

/** Endpoint i: in one of 50 groups and 20 roles; policy j selects group j%50 and admits role j%20. */
function wepValue(i: number, node: string): string {
  return JSON.stringify({
    apiVersion: 'projectcalico.org/v3',
    kind: 'WorkloadEndpoint',
    metadata: { name: `w${i}`, namespace: 'bench', labels: { group: `g${i % 50}`, role: `r${i % 20}` } },
    spec: { node, orchestrator: 'k8s', workload: `w${i}`, endpoint: 'eth0', interfaceName: ifaceName(i), ipNetworks: [`${ipOf(i)}/32`], profiles: ['bench'] },
  });
}

function policyValue(j: number): string {
  return JSON.stringify({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkPolicy',
    metadata: { name: `default.p${j}` },
    spec: {
      order: j,
      selector: `group == 'g${j % 50}'`,
      types: ['Ingress'],
      ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: `role == 'r${j % 20}'` }, destination: { ports: [1000 + (j % 1000)] } }],
    },
  });
}

async function putAll(client: Etcd3, kvs: Array<[string, string]>): Promise<string> {
  let rev = '0';
  for (let i = 0; i < kvs.length; i += 500) {
    const chunk = kvs.slice(i, i + 500);
    const res = await Promise.all(chunk.map(([k, v]) => client.put(k).value(v).exec()));
    for (const r of res) if (BigInt(r.header.revision) > BigInt(rev)) rev = r.header.revision;
  }
  return rev;
}

async function makeDummies(lab: Lab, ns: string, from: number, to: number, dir: string): Promise<void> {
  const lines: string[] = [];
  // veth pairs with both ends in the namespace (this kernel has no dummy driver); the far end up
  // too, so the workload side has carrier and the agent sees the interface UP.
  for (let i = from; i < to; i++) lines.push(`link add ${ifaceName(i)} type veth peer name xb${i}`, `link set xb${i} up`, `link set ${ifaceName(i)} up`);
  const f = join(dir, `links-${ns}-${from}.batch`);
  writeFileSync(f, `${lines.join('\n')}\n`);
  await lab.must(ns, 'ip', ['-batch', f], { timeoutMs: 300_000 });
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

function peakRssMb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

interface ColdResult {
  n: number;
  agentMs: number;
  routes: number;
  rules: number;
  ipsets: number;
  stages: Record<string, number>;
  routeFloorMs: number;
  ruleFloorMs: number;
  rssMb?: number;
  addLatencies?: number[];
}

async function waitStatus(runDir: string, ok: (s: Record<string, unknown>) => boolean, timeoutMs: number, pollMs: number): Promise<Record<string, unknown>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      const s = (await fetchControl(runDir, '/status', 2_000)) as Record<string, unknown>;
      if (ok(s)) return s;
    } catch {
      // not up yet
    }
    if (performance.now() > deadline) throw new Error(`agent not done within ${timeoutMs} ms`);
    await sleep(pollMs);
  }
}

async function coldStart(n: number, etcd: EtcdServer, adds: number): Promise<ColdResult> {
  const lab = createLab('rcbench');
  const dir = mkdtempSync(join(tmpdir(), 'routecat-bench-'));
  const client = connectEtcd({ endpoints: [etcd.endpoint] });
  let agent: LabProcess | undefined;
  try {
    await client.delete().prefix('/calico/').exec();
    const host = await lab.addNs('host');
    await lab.sh(host, 'sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1');
    // The bench endpoints are IPv4 only: without IPv6 on the new links the kernel skips address
    // configuration, DAD and MLD for every one of them (at 10,000 veth pairs that storm swamps a
    // 2-core machine for minutes and is no part of what routecat does).
    await lab.sh(host, 'sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1');
    await makeDummies(lab, host, 0, n + adds, dir);
    const node = 'bench-host';
    const kvs: Array<[string, string]> = [
      [`${P}profiles/bench`, JSON.stringify({ apiVersion: 'projectcalico.org/v3', kind: 'Profile', metadata: { name: 'bench' }, spec: { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] } })],
    ];
    for (let j = 0; j < POLICIES; j++) kvs.push([`${P}globalnetworkpolicies/default.p${j}`, policyValue(j)]);
    for (let i = 0; i < n; i++) kvs.push([`${P}workloadendpoints/bench/w${i}`, wepValue(i, node)]);
    await putAll(client, kvs);
    const runDir = join(dir, 'run');
    const { cmd, args } = agentCommand();
    const t0 = performance.now();
    agent = lab.spawn(host, cmd, [...args, 'node', '--name', node, '--etcd-endpoints', etcd.unixEndpoint, '--dataplane', dataplane, '--run-dir', runDir, '--no-bgp', '--log-level', 'warn', '--health-port', '0', '--metrics-port', '0']);
    const s = await waitStatus(runDir, (x) => x.ready === true && (x.counts as Record<string, number>).routes === n, 600_000, 20);
    const agentMs = performance.now() - t0;
    const counts = s.counts as Record<string, number>;
    const stages = ((s.lastApply as { stages?: Record<string, number> }).stages ?? {}) as Record<string, number>;

    // Adding one endpoint among n: etcd write -> programmed (status reports the revision applied).
    const addLatencies: number[] = [];
    for (let k = 0; k < adds; k++) {
      const i = n + k;
      const t = performance.now();
      const res = await client.put(`${P}workloadendpoints/bench/w${i}`).value(wepValue(i, node)).exec();
      await waitStatus(runDir, (x) => BigInt(String(x.appliedRevision)) >= BigInt(res.header.revision), 60_000, 2);
      addLatencies.push(performance.now() - t);
    }
    const rssMb = peakRssMb(agent.child.pid);

    // Kernel floor, same run: the same routes with one ip -batch, the same rules and sets with one
    // restore each, into an empty namespace with the same interfaces.
    const floor = await lab.addNs('floor');
    await makeDummies(lab, floor, 0, n, dir);
    const routeLines: string[] = [];
    for (let i = 0; i < n; i++) routeLines.push(`route add ${ipOf(i)}/32 dev ${ifaceName(i)} proto 192 scope link`);
    const rf = join(dir, 'routes.batch');
    writeFileSync(rf, `${routeLines.join('\n')}\n`);
    const routeFloorMs = await timed(() => lab.must(floor, 'ip', ['-batch', rf], { timeoutMs: 300_000 }));
    let ruleFloorMs: number;
    if (dataplane === 'nftables') {
      const table = await lab.must(host, 'nft', ['list', 'table', 'inet', 'routecat'], { timeoutMs: 300_000 });
      const tf = join(dir, 'table.nft');
      writeFileSync(tf, table);
      ruleFloorMs = await timed(() => lab.must(floor, 'nft', ['-f', tf], { timeoutMs: 300_000 }));
    } else {
      const sets = await lab.must(host, 'ipset', ['save'], { timeoutMs: 300_000 });
      const v4 = await lab.must(host, 'iptables-save', [], { timeoutMs: 300_000 });
      const v6 = await lab.must(host, 'ip6tables-save', [], { timeoutMs: 300_000 });
      ruleFloorMs = await timed(async () => {
        await lab.must(floor, 'ipset', ['restore'], { stdin: sets, timeoutMs: 300_000 });
        await lab.must(floor, 'iptables-restore', ['-w'], { stdin: v4, timeoutMs: 300_000 });
        await lab.must(floor, 'ip6tables-restore', ['-w'], { stdin: v6, timeoutMs: 300_000 });
      });
    }
    return { n, agentMs, routes: counts.routes ?? 0, rules: counts.rules ?? 0, ipsets: counts.ipsets ?? 0, stages, routeFloorMs, ruleFloorMs, rssMb, addLatencies };
  } finally {
    await agent?.kill().catch(() => {});
    client.close();
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function iperf(seconds: number): Promise<{ none: number; withPolicies: number }> {
  const lab = await NodeLab.create('rcbenchp', dataplane);
  try {
    await lab.addHosts([{ name: 'h1', ip: '172.31.0.1', ip6: 'fd00:31::1', block: '10.65.1.0/24', block6: 'fd00:65:1::/64' }]);
    await lab.apply({ apiVersion: 'projectcalico.org/v3', kind: 'Profile', metadata: { name: 'open' }, spec: { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] } });
    await lab.addWorkload({ name: 'c', host: 'h1', ipv4: '10.65.1.2', labels: { role: 'client' }, profiles: ['open'] });
    const server = await lab.addWorkload({ name: 's', host: 'h1', ipv4: '10.65.1.3', labels: { role: 'server' }, profiles: ['open'] });
    // A second server no policy selects: the two are measured alternately in the same
    // conditions, so load from elsewhere on the machine affects both alike.
    const plain = await lab.addWorkload({ name: 'p', host: 'h1', ipv4: '10.65.1.4', labels: { role: 'plain' }, profiles: ['open'] });
    lab.lab.spawn(server.ns, 'iperf3', ['-s']);
    lab.lab.spawn(plain.ns, 'iperf3', ['-s']);
    lab.startAgent('h1');
    await lab.waitApplied('0', 60_000);
    const run = async (ip: string) => {
      const out = await lab.lab.must(lab.workloads.get('c')!.ns, 'iperf3', ['-c', ip, '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
      return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
    };
    const kvs: Array<[string, string]> = [];
    for (let j = 0; j < POLICIES - 1; j++) {
      kvs.push([`${P}globalnetworkpolicies/default.p${j}`, JSON.stringify({
        apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkPolicy', metadata: { name: `default.p${j}` },
        spec: { order: j, selector: "role == 'server'", types: ['Ingress'], ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: `role == 'other${j}'` }, destination: { ports: [10000 + j] } }] },
      })]);
    }
    kvs.push([`${P}globalnetworkpolicies/default.zz-iperf`, JSON.stringify({
      apiVersion: 'projectcalico.org/v3', kind: 'GlobalNetworkPolicy', metadata: { name: 'default.zz-iperf' },
      spec: { order: POLICIES, selector: "role == 'server'", types: ['Ingress'], ingress: [{ action: 'Allow', protocol: 'TCP', source: { selector: "role == 'client'" }, destination: { ports: [5201] } }] },
    })]);
    const rev = await putAll(lab.client, kvs);
    await lab.waitApplied(rev, 120_000);
    const s = await lab.status('h1');
    await sleep(500);
    const nones: number[] = [];
    const withs: number[] = [];
    for (let round = 0; round < 3; round++) {
      nones.push(await run('10.65.1.4'));
      withs.push(await run('10.65.1.3'));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const none = median(nones);
    const withPolicies = median(withs);
    process.stdout.write(`  (server endpoint has ${(s?.counts as Record<string, number>).policies} policies applying, ${(s?.counts as Record<string, number>).rules} rules programmed; 3 alternating rounds, medians; runs none ${nones.map((x) => x.toFixed(2)).join('/')}, with ${withs.map((x) => x.toFixed(2)).join('/')} Gbit/s)\n`);
    return { none, withPolicies };
  } finally {
    await lab.cleanup();
  }
}

async function main(): Promise<void> {
  const { what } = agentCommand();
  console.log(`routecat node benchmarks: dataplane ${dataplane}, ${POLICIES} policies, agent = ${what}`);
  const etcd = await startEtcd();
  const results: ColdResult[] = [];
  try {
    for (const n of opts.sizes!.split(',').map(Number)) {
      console.log(`\n== cold start, ${n} local endpoints, ${POLICIES} policies`);
      const r = await coldStart(n, etcd, n === Math.max(...opts.sizes!.split(',').map(Number)) ? Number(opts.adds) : 0);
      results.push(r);
      console.log(`  routecat start -> all programmed: ${ms(r.agentMs)} (routes ${r.routes}, rules ${r.rules}, ipsets ${r.ipsets}; last apply stages ${JSON.stringify(r.stages)}; peak RSS ${r.rssMb?.toFixed(0) ?? '?'} MB)`);
      console.log(`  kernel floor: ip -batch of the same routes ${ms(r.routeFloorMs)}; one restore of the same rules+sets ${ms(r.ruleFloorMs)}; sum ${ms(r.routeFloorMs + r.ruleFloorMs)} (ratio ${(r.agentMs / (r.routeFloorMs + r.ruleFloorMs)).toFixed(1)}x)`);
      if (r.addLatencies && r.addLatencies.length > 0) {
        console.log(`  one endpoint added among ${n}: etcd write -> route+rules programmed: p50 ${ms(pct(r.addLatencies, 50))}, p99 ${ms(pct(r.addLatencies, 99))} (${r.addLatencies.length} samples)`);
      }
      const suite = `node/${dataplane}`;
      recordFigures([
        { suite, metric: `cold start, ${n} endpoints + ${POLICIES} policies: start -> all programmed`, routecat: r.agentMs, reference: r.routeFloorMs + r.ruleFloorMs, referenceName: 'kernel floor: `ip -batch` routes + one rules/sets restore', unit: 'ms', better: 'lower' },
        { suite, metric: `cold start, ${n} endpoints: agent peak RSS`, routecat: r.rssMb ?? null, reference: null, referenceName: 'none', unit: 'MB', better: 'lower' },
        ...(r.addLatencies && r.addLatencies.length > 0
          ? [50, 99].map((p) => ({ suite, metric: `one endpoint added among ${n}: etcd write -> programmed, p${p}`, routecat: pct(r.addLatencies!, p), reference: null, referenceName: 'none', unit: 'ms', better: 'lower' as const }))
          : []),
      ]);
    }
  } finally {
    await etcd.cleanup();
  }
  if (!opts['skip-iperf']) {
    console.log(`\n== per-packet cost: iperf3 TCP between two workloads, ${opts['iperf-seconds']} s each`);
    const r = await iperf(Number(opts['iperf-seconds']));
    console.log(`  no policy: ${r.none.toFixed(2)} Gbit/s; ${POLICIES} policies applying: ${r.withPolicies.toFixed(2)} Gbit/s; ratio ${(r.withPolicies / r.none).toFixed(2)}`);
    recordFigures([{ suite: `node/${dataplane}`, metric: `iperf3 TCP between two workloads, ${POLICIES} policies applying`, routecat: r.withPolicies, reference: r.none, referenceName: 'same path, no policy', unit: 'Gbit/s', better: 'higher' }]);
  }
}

await main();
