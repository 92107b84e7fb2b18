/**
 * `bash scripts/lab up [--reflector] | status [--json] | down`: the README's first command. A small
 * routecat cluster, entirely inside network namespaces it creates (rclab-*), left running:
 *
 *   rclab-fabric     a bridge: the shared layer-2 segment 10.200.0.0/24 (never the root namespace)
 *   rclab-etcd1..3   a three-member etcd cluster (10.200.0.21-23)
 *   rclab-host1..3   compute hosts (10.200.0.1-3): `routecat proxy` on 127.0.0.1:2379 in front of
 *                    the three members, `routecat node` (agent + BGP) against that proxy
 *   rclab-rr         10.200.0.10: `routecat reflector` with --reflector (mesh off), else idle
 *   rclab-hostN-*    two workloads per host (tenants red and blue), made by `routecat cni` ADD
 *
 * then prints each host's routes, `routecat status`, a reachability matrix of real packets with
 * each denial explained by `routecat ctl explain`, and a traceroute. Processes run detached with
 * logs under the state dir (/run/routecat-lab) where state.json records every namespace and pid,
 * so `status` and `down` work from any shell, and `up` first removes a half-finished earlier run.
 * It never touches the machine's own interfaces, routes or rules.
 *
 * Run through scripts/lab (installs packages, builds dist/routecat); this file expects both done.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fetchControl } from '../src/cli/status.ts';
import { LAB_NS_PREFIX, inNs, mustInNs, run, startDetached, type Detached } from './lab-exec.ts';
import { LOG_DIR, MATRIX_FILE, STATE_DIR, labNamespaces, labPids, readState, teardown, writeState, type LabState, type ProcRecord, type WorkloadRecord } from './lab-state.ts';
import { LISTEN_PORTS, measureMatrix, renderMatrix, type Matrix } from './lab-matrix.ts';

const ROOT = resolve(import.meta.dirname, '..');
const DIST_BIN = join(ROOT, 'dist/routecat');
const BIN = join(STATE_DIR, 'bin/routecat');
const CNI_BIN = join(STATE_DIR, 'cni-bin');

interface Member {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
}

const FABRIC_NS = 'rclab-fabric';
const ETCD: readonly Member[] = [1, 2, 3].map((i) => ({ name: `etcd${i}`, ns: `rclab-etcd${i}`, ip: `10.200.0.2${i}` }));
const HOSTS: readonly Member[] = [1, 2, 3].map((i) => ({ name: `host${i}`, ns: `rclab-host${i}`, ip: `10.200.0.${i}` }));
const RR: Member = { name: 'rr', ns: 'rclab-rr', ip: '10.200.0.10' };
const ETCD_ENDPOINTS = ETCD.map((e) => `http://${e.ip}:2379`).join(',');
/** Every host's own proxy. */
const LOCAL_ETCD = 'http://127.0.0.1:2379';
/** examples/lab/pools.yaml's blockSize: each host advertises its block as one prefix. */
const BLOCK_BITS = 26;

const WORKLOADS = [
  { name: 'red-web', tenant: 'red', role: 'web', host: 'host1' },
  { name: 'blue-web', tenant: 'blue', role: 'web', host: 'host1' },
  { name: 'red-db', tenant: 'red', role: 'db', host: 'host2' },
  { name: 'blue-db', tenant: 'blue', role: 'db', host: 'host2' },
  { name: 'red-app', tenant: 'red', role: 'app', host: 'host3' },
  { name: 'blue-app', tenant: 'blue', role: 'app', host: 'host3' },
].map((w) => ({ ...w, ns: `rclab-${w.host}-${w.name}` }));

const runDir = (m: Member): string => join(STATE_DIR, m.name);
const hostByName = (name: string): Member => HOSTS.find((h) => h.name === name)!;

// ------------------------------------------------------------------------------------------------
// progress and waits
// ------------------------------------------------------------------------------------------------

/** Set by scripts/lab before installing and building, so the elapsed times include those. */
const t0 = Number(process.env.ROUTECAT_LAB_T0_MS) || Date.now();
const secs = (): string => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);
const say = (line: string): void => console.log(`lab [${secs()}s] ${line}`);
const section = (title: string): void => console.log(`\n== ${title}`);
const indent = (text: string, by = '   '): string => text.trimEnd().split('\n').map((l) => by + l).join('\n');

class LabError extends Error {}

/** The last lines of a log file, for failure messages. */
function tail(log: string, lines = 12): string {
  try {
    return readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `    | ${l}`).join('\n');
  } catch {
    return '    | (no log written)';
  }
}

interface Running {
  readonly rec: ProcRecord;
  readonly proc: Detached;
}
const running = new Map<string, Running>();

/** Fails at once when a lab process that a wait depends on has exited. */
function checkAlive(names: readonly string[]): void {
  for (const n of names) {
    const r = running.get(n);
    const ex = r?.proc.exited();
    if (r && ex) throw new LabError(`${n} exited (${ex.signal ?? `code ${ex.code}`}) in ${r.rec.ns}; its log ${r.rec.log}:\n${tail(r.rec.log)}`);
  }
}

/**
 * Polls `check` every `everyMs` until it reports done; prints its progress line whenever that
 * changes. Throws after timeoutMs naming what did not happen and the logs to read.
 */
async function waitStep(what: string, check: () => Promise<{ done: boolean; progress?: string }>, o: { timeoutMs: number; procs: readonly string[]; everyMs?: number }): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  let said = '';
  let last: unknown;
  for (;;) {
    checkAlive(o.procs);
    let r: { done: boolean; progress?: string } = { done: false };
    try {
      r = await check();
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (r.progress && r.progress !== said) {
      said = r.progress;
      say(`  ${r.progress}`);
    }
    if (r.done) return;
    if (Date.now() > deadline) {
      const logs = o.procs.map((n) => running.get(n)?.rec.log).filter(Boolean);
      throw new LabError(
        `timed out after ${o.timeoutMs / 1000} s waiting for ${what}${said ? ` (last: ${said})` : ''}${last ? `; last error: ${String(last)}` : ''}` +
          (logs.length ? `\nsee the logs: ${logs.join(' ')}` : ''),
      );
    }
    await new Promise((res) => setTimeout(res, o.everyMs ?? 300));
  }
}

// ------------------------------------------------------------------------------------------------
// building blocks
// ------------------------------------------------------------------------------------------------

let state: LabState;

async function addNs(ns: string): Promise<void> {
  const r = await run('ip', ['netns', 'add', ns]);
  if (r.code !== 0) throw new LabError(`ip netns add ${ns} failed: ${r.stderr.trim()}`);
  state.namespaces.push(ns);
  writeState(state);
  await ipIn(ns, ['link', 'set', 'lo', 'up']);
}

/** `ip -n <lab namespace> ...` (no process switches namespace: cheaper than ip netns exec). */
async function ipIn(ns: string, args: readonly string[], input?: string): Promise<void> {
  if (!ns.startsWith(LAB_NS_PREFIX)) throw new LabError(`refusing to configure namespace '${ns}': not one of the lab's`);
  const r = await run('ip', ['-n', ns, ...args], { input });
  if (r.code !== 0) throw new LabError(`ip -n ${ns} ${args.join(' ')} failed: ${r.stderr.trim()}`);
}

/** Members on the fabric bridge: eth0 with `ip`/24 in each, its peer p-<name> in the bridge. */
async function buildFabric(members: readonly Member[]): Promise<void> {
  await ipIn(FABRIC_NS, ['link', 'add', 'br0', 'type', 'bridge']);
  await Promise.all(members.map(async (m) => {
    await ipIn(m.ns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p-${m.name}`, 'netns', FABRIC_NS]);
    await ipIn(m.ns, ['-batch', '-'], `addr add ${m.ip}/24 dev eth0\nlink set eth0 up\n`);
  }));
  await ipIn(FABRIC_NS, ['-batch', '-'], `${members.map((m) => `link set p-${m.name} master br0 up\n`).join('')}link set br0 up\n`);
}

function spawnProc(name: string, ns: string, cmd: string, args: readonly string[]): void {
  const log = join(LOG_DIR, `${name}.log`);
  const proc = startDetached(ns, cmd, args, log);
  const rec: ProcRecord = { name, ns, pid: proc.pid, log };
  running.set(name, { rec, proc });
  state.processes.push(rec);
  writeState(state);
}

const etcdctl = (ns: string, endpoints: string, args: readonly string[]) => inNs(ns, 'etcdctl', ['--endpoints', endpoints, '--dial-timeout', '2s', '--command-timeout', '3s', ...args], { timeoutMs: 10_000, env: { ETCDCTL_API: '3' } });

async function startEtcd(): Promise<void> {
  say(`starting etcd members ${ETCD.map((e) => `${e.name} (${e.ip})`).join(', ')}: one cluster, each in its own namespace`);
  const cluster = ETCD.map((e) => `${e.name}=http://${e.ip}:2380`).join(',');
  for (const e of ETCD) {
    spawnProc(e.name, e.ns, 'etcd', [
      '--name', e.name, '--data-dir', join(STATE_DIR, e.name),
      '--listen-client-urls', `http://${e.ip}:2379,http://127.0.0.1:2379`, '--advertise-client-urls', `http://${e.ip}:2379`,
      '--listen-peer-urls', `http://${e.ip}:2380`, '--initial-advertise-peer-urls', `http://${e.ip}:2380`,
      '--initial-cluster', cluster, '--initial-cluster-token', 'routecat-lab', '--initial-cluster-state', 'new',
      '--log-level', 'warn', '--logger', 'zap',
    ]);
  }
  await waitStep('the etcd cluster to become healthy (all three members)', async () => {
    const r = await etcdctl(ETCD[0]!.ns, ETCD_ENDPOINTS, ['endpoint', 'health']);
    const healthy = (r.stdout + r.stderr).split('\n').filter((l) => / is healthy/.test(l)).length;
    return { done: healthy === ETCD.length && r.code === 0, progress: `etcd: ${healthy} of ${ETCD.length} members healthy` };
  }, { timeoutMs: 60_000, procs: ETCD.map((e) => e.name) });
}

async function startProxies(): Promise<void> {
  say(`starting routecat proxy in each host (127.0.0.1:2379, a cache in front of ${ETCD_ENDPOINTS})`);
  for (const h of HOSTS) {
    spawnProc(`proxy-${h.name}`, h.ns, BIN, ['proxy', '--listen', '127.0.0.1:2379', '--etcd-endpoints', ETCD_ENDPOINTS, '--run-dir', join(runDir(h), 'proxy'), '--log-level', 'info']);
  }
  await waitStep('every host\'s routecat proxy to answer on 127.0.0.1:2379', async () => {
    const ok = await Promise.all(HOSTS.map(async (h) => (await etcdctl(h.ns, '127.0.0.1:2379', ['get', '/calico/routecat-lab-probe'])).code === 0));
    const n = ok.filter(Boolean).length;
    return { done: n === HOSTS.length, progress: `proxies answering: ${n} of ${HOSTS.length}` };
  }, { timeoutMs: 45_000, procs: HOSTS.map((h) => `proxy-${h.name}`) });
}

async function applyManifests(mode: LabState['mode']): Promise<void> {
  const files = ['pools.yaml', mode === 'reflector' ? 'bgp-reflector.yaml' : 'bgp-mesh.yaml', 'tenants.yaml', 'policy.yaml'].map((f) => join(ROOT, 'examples/lab', f));
  const shown = files.map((f) => `-f ${relative(ROOT, f)}`).join(' ');
  say(`routecat ctl apply ${shown}   (in host1, through its proxy)`);
  const out = await mustInNs(HOSTS[0]!.ns, BIN, ['ctl', 'apply', ...files.flatMap((f) => ['-f', f]), '--etcd-endpoints', LOCAL_ETCD, '--log-level', 'warn'], { timeoutMs: 60_000 });
  say(`  ${out.trim().split('\n').join('; ')}`);
}

async function startAgents(mode: LabState['mode']): Promise<void> {
  say(`starting routecat node in ${HOSTS.map((h) => h.name).join(', ')} (agent + BGP, datastore = the local proxy)${mode === 'reflector' ? ', and routecat reflector in rr' : ''}`);
  for (const h of HOSTS) {
    spawnProc(`node-${h.name}`, h.ns, BIN, ['node', '--name', h.name, '--ip', h.ip, '--etcd-endpoints', LOCAL_ETCD, '--run-dir', runDir(h), '--dataplane', 'nftables', '--log-level', 'info']);
  }
  if (mode === 'reflector') {
    spawnProc('reflector', RR.ns, BIN, ['reflector', '--name', RR.name, '--ip', RR.ip, '--cluster-id', RR.ip, '--etcd-endpoints', ETCD_ENDPOINTS, '--run-dir', runDir(RR), '--log-level', 'info']);
  }
  await waitStep('the node agents to report ready (in sync with the datastore, dataplane programmed)', async () => {
    const ready = await Promise.all(HOSTS.map(async (h) => ((await fetchControl(runDir(h), '/status', 2_000).catch(() => undefined)) as { ready?: boolean } | undefined)?.ready === true));
    const n = ready.filter(Boolean).length;
    return { done: n === HOSTS.length, progress: `node agents ready: ${n} of ${HOSTS.length}${n < HOSTS.length ? ` (waiting for ${HOSTS.filter((_, i) => !ready[i]).map((h) => h.name).join(', ')})` : ''}` };
  }, { timeoutMs: 60_000, procs: [...HOSTS.map((h) => `node-${h.name}`), ...HOSTS.map((h) => `proxy-${h.name}`), ...(mode === 'reflector' ? ['reflector'] : [])] });
}

/** One CNI ADD exactly as a runtime runs it: CNI_* in the environment, the network config on stdin. */
async function cniAdd(w: (typeof WORKLOADS)[number]): Promise<WorkloadRecord> {
  const host = hostByName(w.host);
  const conf = {
    cniVersion: '1.0.0',
    name: 'rclab',
    type: 'routecat',
    etcd_endpoints: LOCAL_ETCD,
    nodename: host.name,
    policy_setup_timeout_seconds: 30,
    log_level: 'info',
    profiles: [`tenant-${w.tenant}`],
    labels: { tenant: w.tenant, role: w.role },
    ipam: { type: 'routecat-ipam', assign_ipv4: 'true', assign_ipv6: 'false' },
  };
  const env = {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: `rclab-${w.name}`,
    CNI_NETNS: `/run/netns/${w.ns}`,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: `K8S_POD_NAMESPACE=${w.tenant};K8S_POD_NAME=${w.name}`,
    CNI_PATH: CNI_BIN,
  };
  const r = await inNs(host.ns, join(CNI_BIN, 'routecat'), [], { env, input: JSON.stringify(conf), timeoutMs: 90_000 });
  const log = join(LOG_DIR, `cni-${w.name}.log`);
  writeFileSync(log, `# CNI ADD ${w.name} on ${host.name}: exit ${r.code}${r.timedOut ? ' (timed out)' : ''}, ${r.ms} ms\n# env ${JSON.stringify(env)}\n# stdin ${JSON.stringify(conf)}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  if (r.code !== 0) throw new LabError(`CNI ADD of ${w.name} on ${host.name} failed (${r.timedOut ? 'timed out after 90 s' : `exit ${r.code}`}): ${r.stdout.trim()} ${r.stderr.trim().split('\n').slice(-5).join(' ')}\nsee ${log}`);
  const result = JSON.parse(r.stdout) as { ips?: Array<{ address: string }>; interfaces?: Array<{ name: string; sandbox?: string }> };
  const ip = result.ips?.[0]?.address.split('/')[0];
  const iface = result.interfaces?.find((i) => !i.sandbox)?.name ?? '?';
  if (!ip) throw new LabError(`CNI ADD of ${w.name} returned no IP address: ${r.stdout.trim()}\nsee ${log}`);
  if (/not reported up/.test(r.stderr)) say(`  note: ${w.name}: the agent did not report the endpoint within the CNI timeout (see ${log})`);
  say(`  ${host.name}: ${w.name.padEnd(9)} ${ip.padEnd(14)} host side ${iface}  (tenant ${w.tenant}, role ${w.role}; ADD took ${(r.ms / 1000).toFixed(1)} s)`);
  return { ...w, ip, iface };
}

async function createWorkloads(): Promise<void> {
  say(`creating ${WORKLOADS.length} workloads through the CNI plugin (routecat cni ADD, CNI_* env and config on stdin, as a runtime runs it)`);
  await Promise.all(WORKLOADS.map((w) => addNs(w.ns)));
  // Hosts in parallel, one ADD at a time on each host (so each host claims one address block).
  const made = (await Promise.all(HOSTS.map(async (h) => {
    const out: WorkloadRecord[] = [];
    for (const w of WORKLOADS.filter((x) => x.host === h.name)) out.push(await cniAdd(w));
    return out;
  }))).flat();
  state.workloads.push(...made);
  writeState(state);
  // A tiny TCP listener on LISTEN_PORTS in each workload (node: nc may be missing).
  const script = `/* routecat-lab listener, ${STATE_DIR} */ const net=require('net');let n=0;for(const p of ${JSON.stringify(LISTEN_PORTS)}){net.createServer(s=>{s.on('error',()=>{});s.end('ok\\n')}).listen(p,'0.0.0.0',()=>{if(++n===${LISTEN_PORTS.length})console.log('listening on ${LISTEN_PORTS.join(', ')}')})}`;
  for (const w of made) spawnProc(`listener-${w.name}`, w.ns, process.execPath, ['-e', script]);
  await waitStep(`the TCP listeners on ${LISTEN_PORTS.join(', ')} in every workload`, async () => {
    const n = made.filter((w) => /listening/.test(tail(join(LOG_DIR, `listener-${w.name}.log`), 3))).length;
    return { done: n === made.length };
  }, { timeoutMs: 30_000, procs: made.map((w) => `listener-${w.name}`), everyMs: 100 });
}

interface BgpPeer {
  readonly id: string;
  readonly state: string;
}

async function bgpPeers(m: Member): Promise<BgpPeer[]> {
  const s = (await fetchControl(runDir(m), '/bgp', 2_000)) as { speaker?: { peers?: BgpPeer[] } };
  return s.speaker?.peers ?? [];
}

const blockOf = (ip: string): string => {
  const n = ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  const base = n - (n % 2 ** (32 - BLOCK_BITS));
  return `${[24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join('.')}/${BLOCK_BITS}`;
};

async function waitForBgp(mode: LabState['mode']): Promise<void> {
  const speakers: Member[] = mode === 'reflector' ? [...HOSTS, RR] : [...HOSTS];
  const wanted = (m: Member): string[] => (mode === 'reflector' ? (m === RR ? HOSTS.map((h) => h.ip) : [RR.ip]) : HOSTS.filter((h) => h !== m).map((h) => h.ip));
  const total = speakers.reduce((a, m) => a + wanted(m).length, 0);
  say(`waiting for BGP to establish (${mode === 'reflector' ? 'each host with the reflector rr' : 'full node-to-node mesh'}: ${total} session ends)`);
  const procs = [...HOSTS.map((h) => `node-${h.name}`), ...(mode === 'reflector' ? ['reflector'] : [])];
  await waitStep('the BGP sessions to reach Established', async () => {
    let n = 0;
    const missing: string[] = [];
    for (const m of speakers) {
      const peers = await bgpPeers(m).catch(() => []);
      for (const ip of wanted(m)) {
        if (peers.some((p) => p.id === ip && p.state === 'Established')) n++;
        else missing.push(`${m.name}->${ip} ${peers.find((p) => p.id === ip)?.state ?? 'not configured'}`);
      }
    }
    return { done: n === total, progress: `BGP sessions Established: ${n} of ${total}${missing.length ? ` (not yet: ${missing.join(', ')})` : ''}` };
  }, { timeoutMs: 90_000, procs });
  // Each host must learn every other host's block (one aggregated prefix each), via that host.
  const blocks = new Map<string, string>();
  for (const w of state.workloads) blocks.set(blockOf(w.ip), hostByName(w.host).ip);
  const expected = HOSTS.flatMap((h) => [...blocks].filter(([, via]) => via !== h.ip).map(([block, via]) => ({ h, block, via })));
  say(`waiting for the workload routes: each host learns the others' blocks by BGP (${expected.length} routes)`);
  await waitStep('every host to learn the other hosts\' workload blocks over BGP (ip route proto 193)', async () => {
    const fib = new Map<string, Array<{ dst: string; gateway?: string }>>();
    for (const h of HOSTS) fib.set(h.name, JSON.parse((await mustInNs(h.ns, 'ip', ['-j', '-4', 'route', 'show', 'proto', '193'])) || '[]'));
    const learned = expected.filter((e) => fib.get(e.h.name)!.some((r) => r.dst === e.block && r.gateway === e.via)).length;
    return { done: learned === expected.length, progress: `${learned} of ${expected.length} routes learned` };
  }, { timeoutMs: 60_000, procs });
}

// ------------------------------------------------------------------------------------------------
// what a person wants to see
// ------------------------------------------------------------------------------------------------

async function showRoutes(): Promise<void> {
  section('each host\'s routing table (ip route): its workloads on cali* veths (proto 192, the agent\'s, which iproute2 names "eigrp"), its own block blackholed and the other hosts\' blocks via their fabric address (proto 193, learned by BGP)');
  let tunnels = 0;
  for (const h of HOSTS) {
    console.log(`-- ${h.name} (${h.ip})`);
    console.log(indent(await mustInNs(h.ns, 'ip', ['route'])));
    const links = await mustInNs(h.ns, 'ip', ['-d', '-o', 'link', 'show']);
    tunnels += links.split('\n').filter((l) => /\b(ipip|vxlan|wireguard|gre|sit|ip6tnl)\b/.test(l)).length;
  }
  console.log(`tunnel devices on the hosts (ipip, vxlan, wireguard, gre): ${tunnels === 0 ? 'none: plain layer-3 routing' : tunnels}`);
}

async function showStatus(mode: LabState['mode']): Promise<void> {
  const who: Member[] = mode === 'reflector' ? [HOSTS[0]!, RR] : [HOSTS[0]!];
  for (const m of who) {
    section(`routecat status on ${m.name}`);
    const r = await inNs(m.ns, BIN, ['status', '--run-dir', runDir(m)], { timeoutMs: 20_000 });
    console.log(indent(r.stdout || r.stderr));
  }
}

async function showTraceroute(): Promise<void> {
  const [a, b] = [state.workloads.find((w) => w.name === 'red-web')!, state.workloads.find((w) => w.name === 'red-app')!];
  section(`traceroute ${a.name} (${a.host}) -> ${b.name} (${b.host}, ${b.ip}): the plain routed path, host to host, no tunnel`);
  const r = await inNs(a.ns, 'traceroute', ['-n', '-q', '1', '-w', '1', '-m', '6', b.ip], { timeoutMs: 30_000 });
  console.log(indent(r.stdout || r.stderr));
  const hops = [...HOSTS.map((h) => [h.ip, h.name] as const), ...state.workloads.map((w) => [w.ip, w.name] as const)];
  console.log(`   (${hops.filter(([ip]) => new RegExp(`\\s${ip.replace(/\./g, '\\.')}\\s`).test(r.stdout)).map(([ip, n]) => `${ip} = ${n}`).join(', ')})`);
}

// ------------------------------------------------------------------------------------------------
// commands
// ------------------------------------------------------------------------------------------------

function prepareStateDir(mode: LabState['mode']): void {
  mkdirSync(LOG_DIR, { recursive: true });
  mkdirSync(join(STATE_DIR, 'bin'), { recursive: true });
  mkdirSync(CNI_BIN, { recursive: true });
  // Our own copy: a rebuild of dist/routecat while the lab runs cannot pull it from under us.
  copyFileSync(DIST_BIN, BIN);
  chmodSync(BIN, 0o755);
  // As installed for a runtime: the same binary as the plugin and as the IPAM plugin.
  for (const name of ['routecat', 'routecat-ipam']) symlinkSync(BIN, join(CNI_BIN, name));
  for (const m of [...HOSTS, RR]) mkdirSync(runDir(m), { recursive: true });
  state = { mode, startedAt: new Date().toISOString(), namespaces: [], processes: [], workloads: [] };
  writeState(state);
}

async function up(mode: LabState['mode']): Promise<void> {
  if (!existsSync(DIST_BIN)) throw new LabError(`${DIST_BIN} not found: run it as 'bash scripts/lab up' (which builds it)`);
  const earlier = await labNamespaces();
  if (earlier.length > 0 || existsSync(STATE_DIR)) {
    say(`removing an earlier lab first (${earlier.length} rclab-* namespaces${existsSync(STATE_DIR) ? `, ${STATE_DIR}` : ''})`);
    await teardown((l) => say(`  ${l}`));
  }
  prepareStateDir(mode);
  say(`state, logs and pids in ${STATE_DIR}; mode: ${mode === 'reflector' ? 'route reflector (mesh off)' : 'full BGP mesh'}`);

  say(`creating namespaces: ${FABRIC_NS} (bridge), ${ETCD.length} etcd members, ${HOSTS.length} hosts, ${RR.ns}`);
  const members = [...ETCD, ...HOSTS, RR];
  await Promise.all([FABRIC_NS, ...members.map((m) => m.ns)].map(addNs));
  await buildFabric(members);

  await startEtcd();
  await startProxies();
  await applyManifests(mode);
  await startAgents(mode);
  await createWorkloads();
  await waitForBgp(mode);

  await showRoutes();
  await showStatus(mode);
  section('reachability: every workload to every other, real packets; each denial explained as routecat ctl explain explains it');
  const matrix = await measureMatrix(mode, state.workloads, { bin: BIN, ctlNs: HOSTS[0]!.ns, etcd: LOCAL_ETCD, say: (l) => say(l) });
  writeFileSync(MATRIX_FILE, `${JSON.stringify(matrix, null, 2)}\n`);
  console.log(renderMatrix(matrix).join('\n'));
  await showTraceroute();

  state.upSeconds = Math.round((Date.now() - t0) / 100) / 10;
  writeState(state);
  console.log('');
  if (matrix.mismatches > 0) throw new LabError(`${matrix.mismatches} flow(s) where real packets and ctl explain disagree (marked !): see ${MATRIX_FILE}`);
  say(`lab is up in ${state.upSeconds} s: ${HOSTS.length} hosts, ${state.workloads.length} workloads, ${state.processes.length} processes, ${state.namespaces.length} namespaces`);
  console.log(`   try:  ip netns exec rclab-host1-red-web ping ${state.workloads.find((w) => w.name === 'red-app')!.ip}`);
  console.log(`         ip netns exec rclab-host1 ${BIN} ctl get workloadendpoints -A --etcd-endpoints ${LOCAL_ETCD}`);
  console.log(`   logs: ${LOG_DIR}/   matrix: ${MATRIX_FILE}`);
  console.log('   bash scripts/lab status   shows it again;   bash scripts/lab down   removes all of it');
}

async function status(json: boolean): Promise<number> {
  const s = readState();
  const namespaces = await labNamespaces();
  const pids = await labPids(s, namespaces);
  const procs = (s?.processes ?? []).map((p) => ({ ...p, running: pids.has(p.pid) }));
  let matrix: Matrix | undefined;
  try {
    matrix = JSON.parse(readFileSync(MATRIX_FILE, 'utf8')) as Matrix;
  } catch {
    matrix = undefined;
  }
  const healthy = Boolean(s && s.upSeconds !== undefined && procs.length > 0 && procs.every((p) => p.running));
  if (json) {
    console.log(JSON.stringify({ up: healthy, stateDir: STATE_DIR, state: s ?? null, processes: procs, namespaces, matrix: matrix ?? null }, null, 2));
    return healthy ? 0 : 1;
  }
  if (!s) {
    console.log(namespaces.length ? `no lab state in ${STATE_DIR}, but ${namespaces.length} rclab-* namespaces exist: bash scripts/lab down removes them` : 'no lab is up (bash scripts/lab up starts one)');
    return 1;
  }
  console.log(`lab (${s.mode}) started ${s.startedAt}${s.upSeconds !== undefined ? `, up in ${s.upSeconds} s` : ', up did not finish'}; state in ${STATE_DIR}`);
  console.log(`namespaces: ${namespaces.length} (${namespaces.join(' ')})`);
  console.log('processes:');
  for (const p of procs) console.log(`  ${p.name.padEnd(18)} ${p.ns.padEnd(24)} pid ${String(p.pid).padEnd(8)} ${p.running ? 'running' : 'NOT RUNNING'}  ${p.log}`);
  console.log('workloads:');
  for (const w of s.workloads) console.log(`  ${w.name.padEnd(10)} ${w.host}  ${w.ip.padEnd(14)} ${w.iface}  tenant ${w.tenant}, role ${w.role}  (${w.ns})`);
  const h1 = HOSTS[0]!;
  if (namespaces.includes(h1.ns) && existsSync(BIN)) {
    section(`routecat status on ${h1.name}`);
    const r = await inNs(h1.ns, BIN, ['status', '--run-dir', runDir(h1)], { timeoutMs: 20_000 });
    console.log(indent(r.stdout || r.stderr));
  }
  if (matrix) {
    section(`reachability as measured at ${matrix.measuredAt}`);
    console.log(renderMatrix(matrix).join('\n'));
  }
  return healthy ? 0 : 1;
}

async function down(): Promise<void> {
  const r = await teardown((l) => say(l));
  if (r.processes === 0 && r.namespaces === 0 && !r.removedDir) say('nothing to remove: no lab is up');
  else say(`lab removed: ${r.processes} processes stopped, ${r.namespaces} namespaces deleted, ${STATE_DIR} ${r.removedDir ? 'deleted' : 'was not there'}`);
}

const USAGE = 'usage: scripts/lab up [--reflector] | status [--json] | down';

async function main(argv: readonly string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    console.error('scripts/lab needs root (it creates network namespaces)');
    return 1;
  }
  const unknown = rest.filter((a) => !(cmd === 'up' && a === '--reflector') && !(cmd === 'status' && a === '--json'));
  if (unknown.length > 0 || !cmd) {
    console.error(USAGE);
    return 2;
  }
  if (cmd === 'up') {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        console.error(`\nlab: interrupted after ${secs().trim()} s; what was started is recorded in ${STATE_DIR}: bash scripts/lab down removes it`);
        process.exit(130);
      });
    }
  }
  try {
    if (cmd === 'up') await up(rest.includes('--reflector') ? 'reflector' : 'mesh');
    else if (cmd === 'status') return await status(rest.includes('--json'));
    else if (cmd === 'down') await down();
    else {
      console.error(USAGE);
      return 2;
    }
    return 0;
  } catch (err) {
    // Our own failures say what did not happen and where the log is; a stack helps only for bugs.
    const text = err instanceof Error ? (err instanceof LabError || !process.env.ROUTECAT_LAB_DEBUG ? err.message : (err.stack ?? err.message)) : String(err);
    console.error(`\nlab: FAILED after ${secs().trim()} s: ${text}`);
    if (cmd === 'up') console.error(`the half-built lab is left for inspection (logs in ${LOG_DIR}); bash scripts/lab down removes it, bash scripts/lab up starts over`);
    return 1;
  }
}

process.exit(await main(process.argv.slice(2)));
