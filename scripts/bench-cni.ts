/**
 * DOC: CNI plugin benchmark (figures only, never pass/fail). The plugin runs as a container runtime
 * runs it: the executable found on CNI_PATH (dist/routecat linked there as `routecat` and
 * `routecat-ipam`, so process start-up is the shipped binary's; `node --import tsx src/main.ts`
 * wrappers when dist/routecat is missing, and the header says which), CNI_* in the environment,
 * the network configuration on stdin, inside a throwaway "host" namespace (`ip netns exec`, as
 * tests/helpers/cni-runtime.ts), against a throwaway etcd (tests/helpers/etcd.ts). No agent runs;
 * policy_setup_timeout_seconds is 0, so ADD does not wait for one. Dual stack (one IPv4 and one
 * IPv6 address per attachment). Measured:
 *   1. ADD (and DEL) latency p50/p99 on an empty host, then with --preload workloads already on
 *      the host (ADDed by the plugin first, --preload-jobs at a time), --samples each; every
 *      sample gets a fresh container namespace (`ip netns add`), deleted after the sample.
 *   2. --cycles sequential ADD+DEL cycles in one container namespace (stopped after
 *      --cycles-budget seconds, saying how many ran), then what the whole run left behind:
 *      `routecat ctl ipam check`, allocations (`ctl ipam show`), host `cali*` veths and
 *      WorkloadEndpoints in etcd.
 *   3. References in the same run, interleaved with the samples so they share the load: the bare
 *      kernel work of one ADD through `ip` directly (veth pair created in the container namespace
 *      with its peer sent to the host, host MAC/up/routes in one `ip -batch`, container
 *      up/addresses/routes/neighbour in another: 3 processes; the plugin's sysctl writes are not
 *      in it), its `ip link del`, one start of the plugin executable (CNI VERSION) and
 *      `ip netns exec <host> true` (the runtime-side wrapper every plugin call here pays).
 * Wall times of whole child processes (spawn -> close), 1-minute load average beside each figure.
 * Everything lives in namespaces `rcbc-<pid>-*`; they, etcd and the temporary files are removed at
 * the end, on failure and on Ctrl-C (tests/helpers/netns.ts exit handlers, plus ours below).
 *
 *   node --import tsx scripts/bench-cni.ts [--samples 50] [--preload 500] [--cycles 1000]
 *                                          [--cycles-budget 480] [--preload-jobs 2] [--binary <routecat>]
 * --binary measures another build of the executable instead of dist/routecat.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connectEtcd } from '../src/datastore/etcd.ts';
import { ResourceStore } from '../src/datastore/resource-store.ts';
import { createIpam } from '../src/ipam/ipam.ts';
import { WORKLOAD_ENDPOINT_PREFIX } from '../src/ipam/keys.ts';
import { startEtcd } from '../tests/helpers/etcd.ts';
import { recordFigures } from './bench-record.ts';
import { GATEWAY_V4, HOST_LINK_LOCAL, HOST_VETH_MAC, createLab, labSupport, prepareHost, sweepStaleNamespaces } from '../tests/helpers/netns.ts';

const ROOT = resolve(import.meta.dirname, '..');
const PREFIX = 'rcbc';
const NODE = 'rcbchost';
const NET = 'rcbench';
const POOL4 = '10.78.0.0/16';
const POOL6 = 'fd78::/112';
const PLUGIN_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** spawn -> close, ms. */
  readonly ms: number;
}

function runTimed(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; stdin?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done) => {
    const t0 = performance.now();
    const child = spawn(cmd, [...args], { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? PLUGIN_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      done({ code: null, stdout, stderr: stderr + String(err), ms: performance.now() - t0 });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr, ms: performance.now() - t0 });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin ?? '');
  });
}

async function must(cmd: string, args: readonly string[], stdin?: string): Promise<Run> {
  const r = await runTimed(cmd, args, { stdin, timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r;
}

/** Newest modification time of any file under `dir`, ms. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) newest = Math.max(newest, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return newest;
}

/**
 * The plugin executables: the binary (--binary, else dist/routecat) linked under both names,
 * else tsx wrappers. A dist/routecat older than src/ is measured anyway, with a warning.
 */
function pluginDir(binary: string | undefined): { dir: string; what: string; ctl: { cmd: string; pre: string[] } } {
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}-bin-`));
  const bin = resolve(binary ?? join(ROOT, 'dist/routecat'));
  if (binary !== undefined && !existsSync(bin)) throw new Error(`--binary ${binary}: no such file`);
  if (existsSync(bin)) {
    for (const name of ['routecat', 'routecat-ipam']) symlinkSync(bin, join(dir, name));
    const stale = binary === undefined && statSync(bin).mtimeMs < newestMtime(join(ROOT, 'src')) ? ' — WARNING: older than src/, run `npm run build`' : '';
    return { dir, what: `${binary ?? 'dist/routecat'} (symlinked as routecat and routecat-ipam on CNI_PATH)${stale}`, ctl: { cmd: bin, pre: [] } };
  }
  for (const name of ['routecat', 'routecat-ipam']) {
    const p = join(dir, name);
    // exec -a sets argv0, which is how the program tells routecat-ipam from routecat.
    writeFileSync(p, `#!/bin/bash\ncd '${ROOT}' || exit 1\nexec -a '${name}' node --import tsx src/main.ts "$@"\n`);
    chmodSync(p, 0o755);
  }
  return {
    dir,
    what: 'node --import tsx src/main.ts wrappers (dist/routecat missing: start-up cost is NOT the shipped binary\'s)',
    ctl: { cmd: process.execPath, pre: ['--import', 'tsx', join(ROOT, 'src/main.ts')] },
  };
}

/**
 * Container namespaces, made and deleted one by one (the lab helper only deletes at the end).
 * Named like the lab's, `rcbc-<pid>-c<n>`, so sweepStaleNamespaces() finds a crashed run's.
 */
class Sandboxes {
  readonly #live = new Set<string>();
  #n = 0;

  constructor() {
    process.on('exit', () => {
      for (const ns of this.#live) {
        try {
          execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5_000 });
        } catch {
          // best effort at exit
        }
      }
    });
  }

  async add(): Promise<string> {
    const name = `${PREFIX}-${process.pid}-c${++this.#n}`;
    await must('ip', ['netns', 'add', name]);
    this.#live.add(name);
    return name;
  }

  async del(name: string): Promise<void> {
    await must('ip', ['netns', 'del', name]);
    this.#live.delete(name);
  }

  get count(): number {
    return this.#live.size;
  }
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const load = (): string => loadavg()[0]!.toFixed(2);
const ms = (x: number): string => `${x.toFixed(1)} ms`.padStart(11);
const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const LABEL = 58;

function header(): void {
  console.log(`  ${''.padEnd(LABEL)} ${'p50'.padStart(11)} ${'p99'.padStart(11)} ${'min'.padStart(11)} ${'mean'.padStart(11)}   load`);
}

function row(name: string, xs: readonly number[], loadAt: string): void {
  console.log(`  ${name.padEnd(LABEL)} ${ms(percentile(xs, 50))} ${ms(percentile(xs, 99))} ${ms(Math.min(...xs))} ${ms(mean(xs))}   ${loadAt}`);
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

function intOption(values: Record<string, string | boolean | undefined>, name: string, min: number, max: number): number {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} ${String(values[name])}: an integer ${min}..${max}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      samples: { type: 'string', default: '50' },
      preload: { type: 'string', default: '500' },
      cycles: { type: 'string', default: '1000' },
      'cycles-budget': { type: 'string', default: '480' },
      'preload-jobs': { type: 'string', default: '2' },
      binary: { type: 'string' },
    },
  });
  const samples = intOption(values, 'samples', 1, 1000);
  const preload = intOption(values, 'preload', 0, 5000);
  const cycles = intOption(values, 'cycles', 0, 100_000);
  const budgetS = intOption(values, 'cycles-budget', 1, 86_400);
  const jobs = intOption(values, 'preload-jobs', 1, 16);
  const support = await labSupport();
  if (!support.ok) throw new Error(`cannot build network namespaces: ${support.reason}`);
  await sweepStaleNamespaces(PREFIX);

  // The lab first: it installs the SIGINT/SIGTERM -> exit handlers everything below relies on.
  const lab = createLab(PREFIX);
  const sandboxes = new Sandboxes();
  const plugin = pluginDir(values.binary);
  const tmp = [plugin.dir];
  process.on('exit', () => {
    for (const d of tmp) rmSync(d, { recursive: true, force: true });
  });
  const etcd = await startEtcd();
  tmp.push(etcd.dataDir);
  const client = connectEtcd({ endpoints: [etcd.endpoint] });
  try {
    const hostNs = await lab.addNs('host');
    await prepareHost(lab, hostNs, { ipv4: '192.168.253.1', ipv6: 'fd00:253::1' });
    const store = new ResourceStore(client);
    await store.create({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'bench4' }, spec: { cidr: POOL4, blockSize: 26, ipipMode: 'Never', vxlanMode: 'Never', natOutgoing: false, nodeSelector: 'all()' } });
    await store.create({ apiVersion: 'projectcalico.org/v3', kind: 'IPPool', metadata: { name: 'bench6' }, spec: { cidr: POOL6, blockSize: 122, nodeSelector: 'all()' } });

    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: NET,
      type: 'routecat',
      etcd_endpoints: etcd.unixEndpoint,
      nodename: NODE,
      policy_setup_timeout_seconds: 0,
      ipam: { type: 'routecat-ipam', assign_ipv4: 'true', assign_ipv6: 'true' },
    });
    const cniPath = plugin.dir;
    const pluginBin = join(plugin.dir, 'routecat');
    const cni = (command: 'ADD' | 'DEL' | 'VERSION', containerId = '', netns = ''): Promise<Run> => {
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', CNI_COMMAND: command, CNI_PATH: cniPath };
      if (command !== 'VERSION') Object.assign(env, { CNI_CONTAINERID: containerId, CNI_NETNS: `/run/netns/${netns}`, CNI_IFNAME: 'eth0' });
      return runTimed('ip', ['netns', 'exec', hostNs, pluginBin], { env, stdin: command === 'VERSION' ? '{"cniVersion":"1.0.0"}' : conf });
    };
    const cniMust = async (command: 'ADD' | 'DEL', containerId: string, netns: string): Promise<Run> => {
      const r = await cni(command, containerId, netns);
      if (r.code !== 0) throw new Error(`CNI ${command} ${containerId} exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim().slice(-2000)}`);
      return r;
    };

    // The reference: one ADD's kernel work with `ip` directly, same shape as the plugin's.
    let refN = 0;
    const kernelAdd = async (ctr: string): Promise<{ add: number; del: number }> => {
      const i = ++refN;
      const h = `rcbcref${i}`;
      const v4 = `10.79.${i >> 8}.${i & 255}`;
      const v6 = `fd79::${i.toString(16)}`;
      const t0 = performance.now();
      await must('ip', ['-n', ctr, 'link', 'add', 'eth0', 'mtu', '1500', 'type', 'veth', 'peer', 'name', h, 'mtu', '1500', 'netns', hostNs]);
      await must('ip', ['-n', hostNs, '-batch', '-'], [`link set dev ${h} address ${HOST_VETH_MAC}`, `link set dev ${h} up`, `route replace ${v4}/32 dev ${h} scope link`, `route replace ${v6}/128 dev ${h}`, ''].join('\n'));
      await must('ip', ['-n', ctr, '-batch', '-'], [
        'link set dev eth0 up',
        `addr add ${v4}/32 dev eth0`,
        `route add ${GATEWAY_V4} dev eth0 scope link`,
        `route add default via ${GATEWAY_V4} dev eth0`,
        `neigh replace ${GATEWAY_V4} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
        `addr add ${v6}/128 dev eth0 nodad`,
        `route add ::/0 via ${HOST_LINK_LOCAL} dev eth0`,
        '',
      ].join('\n'));
      const add = performance.now() - t0;
      const del = (await must('ip', ['-n', hostNs, 'link', 'del', 'dev', h])).ms;
      return { add, del };
    };

    /** --samples of ADD, DEL and the references, interleaved; each in a fresh container namespace. */
    const sampleRound = async (tag: string): Promise<void> => {
      const add: number[] = [];
      const del: number[] = [];
      const kAdd: number[] = [];
      const kDel: number[] = [];
      const version: number[] = [];
      const wrap: number[] = [];
      for (let i = 0; i < samples; i++) {
        const ctr = await sandboxes.add();
        add.push((await cniMust('ADD', `${tag}${i}`, ctr)).ms);
        del.push((await cniMust('DEL', `${tag}${i}`, ctr)).ms);
        const k = await kernelAdd(ctr);
        kAdd.push(k.add);
        kDel.push(k.del);
        const v = await cni('VERSION');
        if (v.code !== 0) throw new Error(`CNI VERSION exited ${v.code}: ${v.stdout} ${v.stderr}`);
        version.push(v.ms);
        wrap.push((await must('ip', ['netns', 'exec', hostNs, 'true'])).ms);
        await sandboxes.del(ctr);
      }
      const l = load();
      const where = tag === 'e' ? 'empty host' : `host with ${preload} workloads`;
      const ref = (metric: string, xs: readonly number[], refXs: readonly number[], referenceName: string) =>
        [50, 99].map((p) => ({ suite: 'cni', metric: `${metric}, ${where}, p${p}`, routecat: percentile(xs, p), reference: percentile(refXs, p), referenceName, unit: 'ms', better: 'lower' as const }));
      recordFigures([...ref('CNI ADD', add, kAdd, 'kernel work of one ADD (3 `ip` processes)'), ...ref('CNI DEL', del, kDel, '`ip link del`')]);
      row('CNI ADD (plugin, IPAM, veth, WorkloadEndpoint)', add, l);
      row('CNI DEL', del, l);
      row('ref: kernel work of one ADD, 3 `ip` processes', kAdd, l);
      row('ref: kernel work of one DEL, `ip link del`', kDel, l);
      row('ref: plugin start alone (CNI VERSION)', version, l);
      row('ref: `ip netns exec <host> true` (in every call above)', wrap, l);
    };

    const cores = cpus().length;
    console.log(`routecat CNI plugin: ${plugin.what}; node ${process.version}, ${cores} cores, etcd ${etcd.dataDir} (${fsType(etcd.dataDir)}), dual stack, no agent (policy_setup_timeout_seconds 0); load ${load()}`);
    console.log(`1. ADD latency, ${samples} samples per row${samples < 100 ? ` (p99 of ${samples} is the maximum)` : ''}; every plugin call is \`ip netns exec <host> routecat\``);
    console.log('   empty host:');
    header();
    await sampleRound('e');

    if (preload > 0) {
      const pre: string[] = [];
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: jobs }, async () => {
          while (next < preload) {
            const i = next++;
            const ctr = await sandboxes.add();
            pre[i] = ctr;
            await cniMust('ADD', `pre${i}`, ctr);
          }
        }),
      );
      const s = (performance.now() - t0) / 1000;
      const veths = await countCali(hostNs);
      console.log(`   preload: ${preload} ADDs (${jobs} at a time) in ${s.toFixed(1)} s, ${((s * 1000) / preload).toFixed(0)} ms per workload of wall time; ${veths} cali veths on the host; load ${load()}`);
      console.log(`   with ${preload} workloads on the host:`);
      header();
      await sampleRound('p');
      const t1 = performance.now();
      next = 0;
      await Promise.all(
        Array.from({ length: jobs }, async () => {
          while (next < preload) {
            const i = next++;
            await cniMust('DEL', `pre${i}`, pre[i]!);
            await sandboxes.del(pre[i]!);
          }
        }),
      );
      const d = (performance.now() - t1) / 1000;
      console.log(`   preload removed: ${preload} DELs (${jobs} at a time) in ${d.toFixed(1)} s; load ${load()}`);
    }

    let done = 0;
    let failures = 0;
    let firstFailure = '';
    if (cycles > 0) {
      const ctr = await sandboxes.add();
      const add: number[] = [];
      const del: number[] = [];
      const load0 = load();
      const t0 = performance.now();
      const deadline = t0 + budgetS * 1000;
      for (; done < cycles && performance.now() < deadline; done++) {
        const a = await cni('ADD', `cyc${done}`, ctr);
        const d = await cni('DEL', `cyc${done}`, ctr);
        add.push(a.ms);
        del.push(d.ms);
        for (const [what, r] of [['ADD', a], ['DEL', d]] as const) {
          if (r.code === 0) continue;
          failures++;
          firstFailure ||= `${what} cyc${done} exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim().slice(-500)}`;
        }
      }
      const total = (performance.now() - t0) / 1000;
      await sandboxes.del(ctr);
      const cut = done < cycles ? ` (of ${cycles} asked: stopped at the --cycles-budget of ${budgetS} s)` : '';
      console.log(`2. ${done} sequential ADD+DEL cycles${cut} in ${total.toFixed(1)} s: ${((total * 1000) / done).toFixed(1)} ms per cycle; ${failures} failed calls${firstFailure ? ` (first: ${firstFailure})` : ''}; load ${load0} -> ${load()}`);
      header();
      row('cycle ADD', add, load());
      row('cycle DEL', del, load());
      recordFigures([
        { suite: 'cni', metric: `${done} ADD+DEL cycles: time per cycle`, routecat: (total * 1000) / done, reference: null, referenceName: 'none', unit: 'ms', better: 'lower' },
        { suite: 'cni', metric: `${done} ADD+DEL cycles: failed calls`, routecat: failures, reference: 0, referenceName: 'expected', unit: 'count', better: 'lower' },
      ]);
    }

    const calls = samples * (preload > 0 ? 2 : 1) + preload + done;
    console.log(`   left behind by the whole run (${calls} ADDs and as many DELs):`);
    const ctl = await runTimed(plugin.ctl.cmd, [...plugin.ctl.pre, 'ctl', 'ipam', 'check', '--etcd-endpoints', etcd.endpoint, '--log-level', 'warn']);
    console.log(`   \`routecat ctl ipam check\` (exit ${ctl.code}):`);
    console.log((ctl.stdout + ctl.stderr).trimEnd().replace(/^/gm, '     '));
    const show = await runTimed(plugin.ctl.cmd, [...plugin.ctl.pre, 'ctl', 'ipam', 'show', '--etcd-endpoints', etcd.endpoint, '--log-level', 'warn']);
    const allocations = (await createIpam(client).allocations()).length;
    console.log(`   allocations left: ${allocations}; \`routecat ctl ipam show\` (exit ${show.code}):`);
    console.log((show.stdout + show.stderr).trimEnd().replace(/^/gm, '     '));
    console.log(`   host veths left (\`ip -n <host> link | grep cali | wc -l\`): ${await countCali(hostNs)}`);
    const weps = await client.getAll().prefix(WORKLOAD_ENDPOINT_PREFIX).count();
    console.log(`   WorkloadEndpoints left in etcd: ${weps}`);
    console.log(`   container namespaces left: ${sandboxes.count}`);
    const veths = await countCali(hostNs);
    recordFigures([
      { suite: 'cni', metric: 'left behind: IPAM allocations', routecat: allocations, reference: 0, referenceName: 'expected', unit: 'count', better: 'lower' },
      { suite: 'cni', metric: 'left behind: host cali veths', routecat: veths, reference: 0, referenceName: 'expected', unit: 'count', better: 'lower' },
      { suite: 'cni', metric: 'left behind: WorkloadEndpoints', routecat: weps, reference: 0, referenceName: 'expected', unit: 'count', better: 'lower' },
      { suite: 'cni', metric: '`routecat ctl ipam check` exit code', routecat: ctl.code, reference: 0, referenceName: 'expected', unit: 'code', better: 'lower' },
    ]);
  } finally {
    client.close();
    await lab.cleanup();
    await etcd.cleanup();
  }
}

async function countCali(hostNs: string): Promise<number> {
  const r = await must('bash', ['-c', `ip -n '${hostNs}' link | grep cali | wc -l`]);
  return Number(r.stdout.trim());
}

function fsType(path: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', path], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown fs';
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench-cni: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
