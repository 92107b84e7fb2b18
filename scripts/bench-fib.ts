/**
 * Benchmark of the BGP FIB writer: N /32 routes (one connected next hop) through BgpFib.apply in
 * calls of ~800 changes, from the first call until the last one returns (every command has run in
 * the kernel), beside the kernel's floor measured in the same run: one `ip -batch` of the same
 * `route add` lines from a file. Everything runs in a throwaway namespace `rcfib-bench-<pid>`
 * (IPv4 only, one veth pair), deleted afterwards, also on failure or Ctrl-C; BgpFib runs in a
 * child process inside it (this script with --child).
 *
 *   node --import tsx scripts/bench-fib.ts [--sizes 100000,1000000] [--per-apply 800]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BgpFib } from '../src/agent/kernel/fib.ts';
import type { FibChange } from '../src/bgp/speaker-api.ts';
import { errorMessage } from '../src/errors.ts';
import { setLogLevel } from '../src/log.ts';
import { recordFigures } from './bench-record.ts';

const { values: opts } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100000,1000000' },
    'per-apply': { type: 'string', default: '800' },
    child: { type: 'string' },
  },
});
const PER_APPLY = Number(opts['per-apply']);
const NEXT_HOP = '10.0.0.2';

/** Route i: 100.64.0.0 + i (CGNAT space, 4M addresses), as a /32. */
function prefixOf(i: number): string {
  const a = 0x64400000 + i;
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}/32`;
}

// --- child: BgpFib inside the namespace --------------------------------------------------------------

async function child(n: number): Promise<void> {
  const outer = process.env.ROUTECAT_OUTER_NETNS;
  if (outer === undefined || readlinkSync('/proc/self/ns/net') === outer) throw new Error('bench child runs only inside its namespace');
  setLogLevel('warn');
  const changes: FibChange[] = [];
  for (let i = 0; i < n; i++) changes.push({ prefix: prefixOf(i), family: 4, nextHops: [NEXT_HOP] });
  const fib = new BgpFib({ retryIntervalMs: 0 });
  await fib.start();
  const t0 = performance.now();
  let failed = 0;
  let added = 0;
  for (let i = 0; i < n; i += PER_APPLY) {
    const r = await fib.apply(changes.slice(i, i + PER_APPLY));
    failed += r.failed + r.rejected.length;
    added += r.added;
  }
  const ms = performance.now() - t0;
  await fib.close();
  process.stdout.write(JSON.stringify({ ms, added, failed, counters: fib.counters() }) + '\n');
}

// --- parent ----------------------------------------------------------------------------------------

const NS = `rcfib-bench-${process.pid}`;
let nsCreated = false;
let tmpDir: string | undefined;

function sh(args: string[], timeoutMs = 600_000): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1024 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
}

function inNs(args: string[], timeoutMs?: number): string {
  return sh(['ip', 'netns', 'exec', NS, ...args], timeoutMs);
}

function cleanup(): void {
  if (tmpDir !== undefined) rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = undefined;
  if (!nsCreated) return;
  nsCreated = false;
  try {
    for (const pid of sh(['ip', 'netns', 'pids', NS], 5_000).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
  } catch {
    // nothing left
  }
  try {
    sh(['ip', 'netns', 'del', NS], 60_000);
  } catch (err) {
    process.stderr.write(`could not delete namespace ${NS}: ${errorMessage(err)}\n`);
  }
}

function countRoutes(): number {
  return Number(sh(['bash', '-c', `ip -n ${NS} -4 route show proto 193 | wc -l`]).trim());
}

function flush(): void {
  inNs(['ip', '-4', 'route', 'flush', 'proto', '193']);
  if (countRoutes() !== 0) throw new Error('flush left routes behind');
}

function runChild(n: number): Promise<{ ms: number; added: number; failed: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', import.meta.filename, '--child', String(n), '--per-apply', String(PER_APPLY)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ROUTECAT_OUTER_NETNS: readlinkSync('/proc/self/ns/net') },
    });
    let out = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 900_000);
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`bench child exited (${signal ?? code}): ${out}`));
      else resolve(JSON.parse(out.trim()) as { ms: number; added: number; failed: number });
    });
  });
}

async function parent(): Promise<void> {
  const sizes = String(opts.sizes).split(',').map(Number);
  process.once('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      cleanup();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  sh(['ip', 'netns', 'add', NS]);
  nsCreated = true;
  inNs(['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.all.disable_ipv6=1']);
  for (const l of ['link set lo up', 'link add rcfib0 type veth peer name rcfib1', 'address add 10.0.0.1/24 dev rcfib0', 'link set rcfib1 up', 'link set rcfib0 up']) inNs(['ip', ...l.split(' ')]);
  const dir = mkdtempSync(join(tmpdir(), 'rcfib-bench-'));
  tmpDir = dir;
  try {
    console.log(`BGP FIB writer: N /32 routes via ${NEXT_HOP}, ${PER_APPLY} changes per BgpFib.apply, in namespace ${NS}`);
    for (const n of sizes) {
      const file = join(dir, `routes-${n}.batch`);
      const lines: string[] = [];
      for (let i = 0; i < n; i++) lines.push(`route add ${prefixOf(i)} via ${NEXT_HOP} proto 193 table main`);
      writeFileSync(file, lines.join('\n') + '\n');
      lines.length = 0;

      let t = performance.now();
      inNs(['ip', '-batch', file]);
      const floorMs = performance.now() - t;
      if (countRoutes() !== n) throw new Error(`ip -batch: ${countRoutes()} routes, not ${n}`);
      flush();
      console.log(`  ${n.toLocaleString('en-US').padStart(9)} routes: kernel floor done in ${(floorMs / 1000).toFixed(2)} s, now BgpFib ...`);

      const r = await runChild(n);
      const got = countRoutes();
      if (got !== n || r.failed !== 0) throw new Error(`BgpFib: ${got} routes in the kernel (${r.added} added, ${r.failed} failed), not ${n}`);
      t = performance.now();
      flush();
      const flushMs = performance.now() - t;

      const rate = (ms: number) => `${Math.round(n / (ms / 1000)).toLocaleString('en-US')} routes/s`;
      console.log(`  ${n.toLocaleString('en-US').padStart(9)} routes: BgpFib.apply ${(r.ms / 1000).toFixed(2)} s (${rate(r.ms)})  |  kernel floor ip -batch ${(floorMs / 1000).toFixed(2)} s (${rate(floorMs)})  |  ratio ${(r.ms / floorMs).toFixed(2)}x  (flush ${(flushMs / 1000).toFixed(1)} s)`);
      recordFigures([{ suite: 'fib', metric: `${n} /32 routes into the kernel FIB`, routecat: r.ms / 1000, reference: floorMs / 1000, referenceName: 'kernel floor: `ip -batch`', unit: 's', better: 'lower' }]);
    }
  } finally {
    cleanup();
  }
  const left = sh(['ip', 'netns', 'list']).split('\n').filter((l) => l.startsWith(NS));
  if (left.length > 0) throw new Error(`namespace left behind: ${left.join(', ')}`);
}

if (opts.child !== undefined) {
  child(Number(opts.child)).catch((err) => {
    process.stderr.write(`bench child: ${errorMessage(err)}\n`);
    process.exit(1);
  });
} else {
  parent().catch((err) => {
    process.stderr.write(`bench-fib: ${errorMessage(err)}\n`);
    cleanup();
    process.exit(1);
  });
}
