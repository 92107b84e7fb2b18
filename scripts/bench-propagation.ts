/**
 * DOC: Route propagation benchmark (figures only, never pass/fail): two hosts running the real
 * `routecat node` with BGP on (dist/routecat when it exists, else `node --import tsx src/main.ts`),
 * one fabric segment, no static routes, a throwaway etcd (tests/helpers/node-lab.ts, etcd.ts).
 * Per sample, a workload appears on host A the way the CNI plugin leaves it (veth + addresses,
 * as NodeLab.addWorkload does), then its WorkloadEndpoint is written to etcd, and we time
 *   (i)  etcd write -> the agent's /32 route (proto 192) in A's kernel,
 *   (ii) etcd write -> the BGP-learned route (proto 193) in B's kernel,
 * and the BGP share (ii - i). The reference in the same run, right after each sample: one route
 * pushed into B's kernel by `ip -n <B> route add <ip>/32 via <A> proto 194` (process start +
 * one netlink request: the kernel floor of one route add from outside the kernel).
 *
 * Times come from `ip -4 -ts -N monitor route` running in A's and in B's namespace (-N: numeric
 * protocols; rt_protos names 192 "eigrp"): the timestamp `ip` takes when the kernel's
 * notification arrives (gettimeofday, microseconds), against this process's wall clock
 * (performance.timeOrigin + performance.now()) read just before the etcd write (or the
 * `ip route add`); each sample's monitor lines are matched by address and protocol. Agents run with their production defaults for refresh intervals.
 * Everything lives in namespaces `rcbp-<pid>-*` and is removed at the end, on failure and on
 * Ctrl-C (tests/helpers/netns.ts); etcd and the agents go with them.
 *
 *   node --import tsx scripts/bench-propagation.ts [--samples 30] [--dataplane iptables|nftables]
 */
import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { BgpNodeStatus } from '../src/agent/bgp-node.ts';
import { fetchControl } from '../src/cli/status.ts';
import { GATEWAY_V4, HOST_VETH_MAC, labSupport, sweepStaleNamespaces, type LabProcess } from '../tests/helpers/netns.ts';
import { NodeLab, hostIface, type HostDef, type Workload } from '../tests/helpers/node-lab.ts';
import { recordFigures } from './bench-record.ts';

const ROOT = resolve(import.meta.dirname, '..');
const A: HostDef = { name: 'a', ip: '10.201.0.1', ip6: 'fd00:201::1', block: '10.65.1.0/24', block6: 'fd00:65:1::/64' };
const B: HostDef = { name: 'b', ip: '10.201.0.2', ip6: 'fd00:201::2', block: '10.65.2.0/24', block6: 'fd00:65:2::/64' };
const workloadIp = (i: number): string => `10.65.1.${10 + i}`;
const floorIp = (i: number): string => `10.66.0.${10 + i}`;
const FLOOR_PROTO = '194';
const SAMPLE_TIMEOUT_MS = 15_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Wall clock in ms with sub-millisecond resolution (comparable with `ip -ts` timestamps). */
const wall = (): number => performance.timeOrigin + performance.now();

/**
 * First appearance of each (address, proto) in one `ip -4 -ts monitor route` stream, as wall-clock
 * ms. Lines look like `[2026-12-02T13:10:11.123456] 10.65.1.10 via 10.201.0.1 dev eth0 proto 193`.
 */
class RouteMonitor {
  readonly #seen = new Map<string, number>();
  readonly #waiters = new Map<string, () => void>();
  #partial = '';
  readonly proc: LabProcess;

  constructor(proc: LabProcess) {
    this.proc = proc;
    proc.child.stdout!.on('data', (d: string) => {
      const text = this.#partial + d;
      const ls = text.split('\n');
      this.#partial = ls.pop() ?? '';
      for (const l of ls) this.#line(l);
    });
  }

  #line(l: string): void {
    const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})\]\s+(Deleted\s+)?(\d+\.\d+\.\d+\.\d+)(?:\/32)?\s.*\bproto\s+(\S+)/.exec(l);
    if (!m || m[3]) return;
    const key = `${m[4]}|${m[5]}`;
    if (this.#seen.has(key)) return;
    // Local time without a zone, as `ip` prints it; Date.parse reads it in the same zone.
    this.#seen.set(key, Date.parse(m[1]!) + Number(m[2]) / 1000);
    this.#waiters.get(key)?.();
  }

  /** When the route (address, proto) was first added; waits for it up to timeoutMs. */
  async when(addr: string, proto: string, timeoutMs = SAMPLE_TIMEOUT_MS): Promise<number> {
    const key = `${addr}|${proto}`;
    if (!this.#seen.has(key)) {
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => {
          this.#waiters.delete(key);
          rej(new Error(`no route ${addr} proto ${proto} within ${timeoutMs} ms in ${this.proc.ns}`));
        }, timeoutMs);
        this.#waiters.set(key, () => {
          clearTimeout(timer);
          this.#waiters.delete(key);
          res();
        });
      });
    }
    return this.#seen.get(key)!;
  }
}

function ipRun(args: readonly string[]): Promise<void> {
  return new Promise((res, rej) => execFile('ip', [...args], { timeout: 10_000 }, (err, _o, stderr) => (err ? rej(new Error(`ip ${args.join(' ')}: ${stderr || err.message}`)) : res())));
}

/** The agent command: the built binary when present, else the sources through tsx. */
function agentCommand(): { cmd: string; pre: string[]; what: string } {
  const bin = join(ROOT, 'dist/routecat');
  if (existsSync(bin)) return { cmd: bin, pre: [], what: 'dist/routecat' };
  return { cmd: process.execPath, pre: ['--import', 'tsx', join(ROOT, 'src/main.ts')], what: 'node --import tsx src/main.ts' };
}

/** NodeLab.startAgent with BGP on, the chosen command, and the agent's default refresh intervals. */
function startAgent(lab: NodeLab, name: string, c: ReturnType<typeof agentCommand>): void {
  const h = lab.hosts.get(name)!;
  h.agent = lab.lab.spawn(h.ns, c.cmd, [
    ...c.pre, 'node',
    '--name', h.name,
    '--ip', h.ip,
    '--etcd-endpoints', lab.etcd.unixEndpoint,
    '--dataplane', lab.dataplane,
    '--run-dir', h.runDir,
    '--log-level', 'warn',
  ]);
}

/** The workload's namespace and veth as NodeLab.addWorkload leaves them, without the etcd write. */
async function wireWorkload(lab: NodeLab, name: string, ipv4: string): Promise<Workload> {
  const host = lab.hosts.get('a')!;
  const ns = await lab.lab.addNs(name);
  const iface = hostIface(name);
  await lab.lab.sh(ns, 'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1');
  await lab.lab.veth(host.ns, iface, ns, 'eth0');
  await lab.lab.sh(host.ns, `ip link set ${iface} address ${HOST_VETH_MAC} && ip link set ${iface} up`);
  await lab.lab.sh(ns, [
    'ip link set eth0 up',
    `ip addr add ${ipv4}/32 dev eth0`,
    `ip route add ${GATEWAY_V4} dev eth0 scope link`,
    `ip route add default via ${GATEWAY_V4} dev eth0`,
    `ip neigh add ${GATEWAY_V4} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
  ].join(' && '));
  const w: Workload = { name, host: 'a', ipv4, labels: {}, profiles: ['open'], ns, iface };
  lab.workloads.set(name, w);
  return w;
}

async function waitEstablished(lab: NodeLab, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await Promise.all(
      [[A, B], [B, A]].map(async ([h, other]) => {
        try {
          const s = (await fetchControl(lab.hosts.get(h!.name)!.runDir, '/bgp', 2_000)) as BgpNodeStatus;
          return s.speaker?.peers.some((p) => p.id === other!.ip && p.state === 'Established') === true;
        } catch {
          return false;
        }
      }),
    );
    if (ok.every(Boolean)) return;
    if (Date.now() > deadline) {
      const logs = [...lab.hosts.values()].map((h) => `--- ${h.name}:\n${h.agent?.output().slice(-2000) ?? ''}`).join('\n');
      throw new Error(`BGP session a <-> b not Established within ${timeoutMs} ms\n${logs}`);
    }
    await sleep(200);
  }
}

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { samples: { type: 'string', default: '30' }, dataplane: { type: 'string', default: 'iptables' } } });
  const samples = Number(values.samples);
  if (!Number.isInteger(samples) || samples < 1 || samples > 200) throw new Error(`--samples ${values.samples}: an integer 1..200`);
  const dataplane = values.dataplane;
  if (dataplane !== 'iptables' && dataplane !== 'nftables') throw new Error(`--dataplane '${dataplane}': iptables or nftables`);
  const support = await labSupport();
  if (!support.ok) throw new Error(`cannot build network namespaces: ${support.reason}`);
  await sweepStaleNamespaces('rcbp');
  const agent = agentCommand();

  const lab = await NodeLab.create('rcbp', dataplane);
  // Ctrl-C: netns.ts kills our processes and deletes our namespaces, etcd.ts kills etcd; the files go here.
  const tmp = [lab.tmpDir, lab.etcd.dataDir];
  process.on('exit', () => {
    for (const d of tmp) rmSync(d, { recursive: true, force: true });
  });
  try {
    await lab.addHosts([A, B], { staticRoutes: false });
    await lab.apply({
      apiVersion: 'projectcalico.org/v3',
      kind: 'Profile',
      metadata: { name: 'open' },
      spec: { ingress: [{ action: 'Allow' }], egress: [{ action: 'Allow' }] },
    });
    startAgent(lab, 'a', agent);
    startAgent(lab, 'b', agent);
    await lab.waitApplied('0', 60_000);
    await waitEstablished(lab, 60_000);
    const nsA = lab.hosts.get('a')!.ns;
    const nsB = lab.hosts.get('b')!.ns;
    const monA = new RouteMonitor(lab.lab.spawn(nsA, 'ip', ['-4', '-ts', '-N', 'monitor', 'route']));
    const monB = new RouteMonitor(lab.lab.spawn(nsB, 'ip', ['-4', '-ts', '-N', 'monitor', 'route']));
    // Both monitors are subscribed once they report a route we add (and the clocks agree).
    for (const [ns, mon] of [[nsA, monA], [nsB, monB]] as const) {
      for (let i = 0; ; i++) {
        await ipRun(['-n', ns, 'route', 'add', '10.66.1.1/32', 'via', ns === nsA ? B.ip : A.ip, 'proto', FLOOR_PROTO]);
        const ok = await mon.when('10.66.1.1', FLOOR_PROTO, 1_000).then(() => true, () => false);
        await ipRun(['-n', ns, 'route', 'del', '10.66.1.1/32', 'proto', FLOOR_PROTO]);
        if (ok) break;
        if (i > 5) throw new Error(`ip monitor in ${ns} reports nothing`);
      }
    }

    const load0 = loadavg()[0]!;
    console.log(`routecat route propagation: ${agent.what} node x2 (BGP mesh a <-> b, dataplane ${dataplane}), node ${process.version}, ${samples} samples; load ${load0.toFixed(1)}`);
    const local: number[] = [];
    const remote: number[] = [];
    const bgp: number[] = [];
    const floor: number[] = [];
    const ack: number[] = [];
    for (let i = 0; i < samples; i++) {
      const ip = workloadIp(i);
      const w = await wireWorkload(lab, `w${i}`, ip);
      await sleep(300); // the agent has seen the new interface; only the endpoint write is timed
      const t0 = wall();
      await lab.putWorkloadEndpoint(w);
      ack.push(wall() - t0);
      const tA = await monA.when(ip, '192');
      const tB = await monB.when(ip, '193');
      local.push(tA - t0);
      remote.push(tB - t0);
      bgp.push(tB - tA);
      // Reference: one route add into B's kernel from a fresh process.
      await sleep(50);
      const fip = floorIp(i);
      const tf = wall();
      await ipRun(['-n', nsB, 'route', 'add', `${fip}/32`, 'via', A.ip, 'proto', FLOOR_PROTO]);
      floor.push((await monB.when(fip, FLOOR_PROTO)) - tf);
      await ipRun(['-n', nsB, 'route', 'del', `${fip}/32`, 'proto', FLOOR_PROTO]);
      await sleep(100);
    }
    const ms = (x: number): string => `${x.toFixed(1)} ms`.padStart(10);
    const row = (name: string, xs: readonly number[]): string => `  ${name.padEnd(52)} ${ms(percentile(xs, 50))} ${ms(percentile(xs, 99))} ${ms(Math.min(...xs))}`;
    console.log(`  ${''.padEnd(52)} ${'p50'.padStart(10)} ${'p99'.padStart(10)} ${'min'.padStart(10)}`);
    console.log(row('(i)  etcd write -> route in A (proto 192)', local));
    console.log(row('(ii) etcd write -> route in B (proto 193, via BGP)', remote));
    console.log(row('     BGP share (ii) - (i)', bgp));
    console.log(row('     etcd write acknowledged (for scale)', ack));
    console.log(row('floor: `ip -n B route add` -> route in B', floor));
    const floorName = 'kernel floor: one `ip route add` into B';
    recordFigures([50, 99].flatMap((p) => [
      { suite: `propagation/${dataplane}`, metric: `etcd write -> route in A's kernel (proto 192), p${p}`, routecat: percentile(local, p), reference: percentile(floor, p), referenceName: floorName, unit: 'ms', better: 'lower' as const },
      { suite: `propagation/${dataplane}`, metric: `etcd write -> route in B's kernel via BGP (proto 193), p${p}`, routecat: percentile(remote, p), reference: percentile(floor, p), referenceName: floorName, unit: 'ms', better: 'lower' as const },
    ]));
    console.log(`  (${samples} samples; p99 of ${samples} is the ${samples < 100 ? 'maximum' : '99th percentile'}; load ${load0.toFixed(1)} -> ${loadavg()[0]!.toFixed(1)}; times from \`ip -ts -N monitor route\` in each namespace)`);
  } finally {
    await lab.cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench-propagation: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
