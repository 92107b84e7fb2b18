/**
 * DOC: etcd proxy benchmark (issue 6; figures only, never pass/fail). One throwaway etcd on
 * loopback (tests/helpers/etcd.ts) holding --keys keys under /calico/, and in front of it, one
 * after the other: `dist/routecat proxy` (`node --import tsx src/main.ts proxy` when the binary is
 * missing), Debian's `etcd grpc-proxy start` (the reference proxy) and nothing (etcd direct).
 * Against each target:
 *  1. watch fan-out: --watchers watchers on /calico/ (each a gRPC Watch stream carrying one create
 *     request for the prefix) spread round-robin over --connections client connections. Upstream
 *     load from etcd's own /metrics, as the change from before the target started to when every
 *     watcher is created: etcd_debugging_mvcc_watcher_total (watchers), ..._watch_stream_total
 *     (Watch streams), grpc_server_started_total{grpc_method="Watch"} (Watch RPCs). Then --puts
 *     puts straight to etcd, one at a time, the next once every watcher has the event: latency from
 *     just before the put to each watcher's receipt (p50, p99 over puts x watchers; p50 of the
 *     slowest watcher per put), and each watcher's stream is checked: every event once, in order.
 *     RSS (VmRSS now, VmHWM peak) of the proxy process after the puts; CPU time of the target and
 *     etcd over the puts (/proc/<pid>/stat), per put: the cost of one event to every watcher.
 *  2. serializable reads, with every target up (fresh) at once: --clients clients, one connection
 *     each, each a closed loop of Range(serializable) of one key under /calico/ with one request in
 *     flight; --seconds per target split into --rounds rounds, the target order rotated each round
 *     so a change in the host's load falls on all alike; each round after one second of warm-up:
 *     reads/s, p50, p99 over all rounds, and CPU time of the target and etcd per 1,000 reads (CPU
 *     time stays meaningful when other work on the host stretches the wall-clock figures).
 * The load generator is this script in a child process (--gen), so it shares its event loop with
 * nothing: gRPC over node:http2 directly (H2Channel: hand-framed, requests encoded once, read
 * responses not decoded except one per client to check it, watch responses decoded), about three
 * times lighter per call than @grpc/grpc-js here (--read-client grpc-js to compare). Its CPU use is
 * printed: near 100% of a core means the client, not the target, set the pace. All on 127.0.0.1
 * with free ports; every process started here is killed at the end, on failure and on Ctrl-C.
 *
 *   node --import tsx scripts/bench-proxy.ts [--watchers 1000] [--connections 50] [--puts 100]
 *        [--clients 64] [--seconds 10] [--keys 1000] [--only watch,read]
 *        [--rounds 2] [--targets routecat,grpc-proxy,direct] [--read-client http2|grpc-js]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import http2 from 'node:http2';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { etcdMethod } from '../src/proxy/etcd-proto.ts';
import { startEtcd, freePort, type EtcdServer } from '../tests/helpers/etcd.ts';
import { recordFigures, type FigureInput } from './bench-record.ts';

const ROOT = resolve(import.meta.dirname, '..');
const PREFIX = '/calico/';
const PREFIX_END = '/calico0'; // '/' + 1
const FANOUT_KEY = '/calico/bench/fanout/';
const READ_KEY = '/calico/resources/v3/projectcalico.org/nodes/bench-host-0';
const VALUE = Buffer.alloc(300, 'x');

const RANGE = etcdMethod('KV', 'Range');
const PUT = etcdMethod('KV', 'Put');
const WATCH = etcdMethod('Watch', 'Watch');

const { values: opts } = parseArgs({
  options: {
    watchers: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '50' },
    puts: { type: 'string', default: '100' },
    clients: { type: 'string', default: '64' },
    seconds: { type: 'string', default: '10' },
    keys: { type: 'string', default: '1000' },
    only: { type: 'string', default: 'watch,read' },
    targets: { type: 'string', default: 'routecat,grpc-proxy,direct' },
    'read-client': { type: 'string', default: 'http2' },
    rounds: { type: 'string', default: '2' },
    gen: { type: 'string' },
    target: { type: 'string' },
    etcd: { type: 'string' },
  },
});

function intOpt(name: keyof typeof opts, min: number, max: number): number {
  const n = Number(opts[name]);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} ${String(opts[name])}: an integer ${min}..${max}`);
  return n;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const raw = (b: Buffer): Buffer => b;

function percentile(xs: ArrayLike<number>, p: number): number {
  const s = Float64Array.from(xs).sort();
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * gRPC over node:http2 with nothing in between: one HTTP/2 session is one client connection;
 * messages carry gRPC's 5-byte prefix (flag, length); the status comes in the trailers (or in the
 * headers of a trailers-only answer). About three times lighter per call than @grpc/grpc-js here,
 * which matters when the client shares two cores with etcd and the proxy.
 */
class H2Channel {
  readonly #session: http2.ClientHttp2Session;

  constructor(target: string) {
    this.#session = http2.connect(`http://${target}`);
    this.#session.on('error', () => {}); // surfaces on the streams
  }

  /** One unary call with an already framed request; cb gets the response message. */
  call(path: string, framed: Buffer, cb: (err: Error | null, res?: Buffer) => void): void {
    let req: http2.ClientHttp2Stream;
    try {
      req = this.#session.request(grpcHeaders(path));
    } catch (err) {
      queueMicrotask(() => cb(err as Error)); // the session is gone (refused, reset)
      return;
    }
    const chunks: Buffer[] = [];
    let status: string | undefined;
    let message = '';
    const meta = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', meta);
    req.on('trailers', meta);
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('error', () => {}); // reported by 'close'
    req.on('close', () => {
      if (status === '0') cb(null, Buffer.concat(chunks).subarray(5));
      else cb(new Error(`${path}: grpc-status ${status ?? `none (HTTP/2 code ${req.rstCode})`} ${message}`));
    });
    req.end(framed);
  }

  unary(path: string, msg: Buffer, timeoutMs = 10_000): Promise<Buffer> {
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${path}: no answer in ${timeoutMs} ms`)), timeoutMs);
      this.call(path, grpcFrame(msg), (err, out) => {
        clearTimeout(timer);
        if (err) rej(err);
        else res(out!);
      });
    });
  }

  /** A bidirectional stream (Watch): write framed messages, read with a GrpcDeframer. */
  stream(path: string): http2.ClientHttp2Stream {
    return this.#session.request(grpcHeaders(path), { endStream: false });
  }

  close(): void {
    this.#session.destroy();
  }
}

const grpcHeaders = (path: string): http2.OutgoingHttpHeaders => ({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });

function grpcFrame(msg: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + msg.length);
  b[0] = 0; // not compressed
  b.writeUInt32BE(msg.length, 1);
  msg.copy(b, 5);
  return b;
}

/** Splits a gRPC body, arriving in arbitrary chunks, into messages. */
class GrpcDeframer {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: Buffer[] = [];
    while (this.#buf.length >= 5) {
      const len = this.#buf.readUInt32BE(1);
      if (this.#buf.length < 5 + len) break;
      out.push(this.#buf.subarray(5, 5 + len));
      this.#buf = this.#buf.subarray(5 + len);
    }
    return out;
  }
}

/** An @grpc/grpc-js connection (--read-client grpc-js): its own subchannel pool, so N clients are N TCP connections. */
function grpcJsClient(target: string): grpc.Client {
  return new grpc.Client(target, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

// --- the load generator (child process) ------------------------------------------------------------

/** Writes one JSON line to the parent. */
const tell = (msg: object): void => void process.stdout.write(`${JSON.stringify(msg)}\n`);

/** The parent's lines on stdin, one at a time. */
function stdinLines(): () => Promise<string> {
  const rl = createInterface({ input: process.stdin });
  const queue: string[] = [];
  let waiting: ((l: string) => void) | undefined;
  rl.on('line', (l) => (waiting ? (waiting(l), (waiting = undefined)) : queue.push(l)));
  rl.on('close', () => process.exit(0)); // the parent went away
  return () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => (waiting = r)));
}

async function genWatch(target: string, etcdAddr: string): Promise<void> {
  const W = intOpt('watchers', 1, 100_000);
  const C = intOpt('connections', 1, W);
  const P = intOpt('puts', 1, 10_000);
  const next = stdinLines();
  const conns = Array.from({ length: C }, () => new H2Channel(target));
  const writer = new H2Channel(etcdAddr);
  const create = grpcFrame(WATCH.encodeRequest({ create_request: { key: Buffer.from(PREFIX), range_end: Buffer.from(PREFIX_END) } }));
  const got = new Float64Array(W * P).fill(NaN);
  const receivedPerPut = new Int32Array(P);
  const lastSeen = new Int32Array(W).fill(-1);
  const problems = { duplicates: 0, outOfOrder: 0, foreign: 0, canceled: 0, errors: 0 };
  const firstProblem: string[] = [];
  const problem = (what: keyof typeof problems, text: string): void => {
    problems[what]++;
    if (firstProblem.length < 5) firstProblem.push(text);
  };
  let created = 0;
  let closing = false;
  let onProgress: (() => void) | undefined;
  const streams: http2.ClientHttp2Stream[] = [];
  const t0 = performance.now();
  for (let w = 0; w < W; w++) {
    const s = conns[w % C]!.stream(WATCH.path);
    const deframer = new GrpcDeframer();
    s.on('data', (chunk: Buffer) => {
      const now = performance.now();
      for (const msg of deframer.push(chunk)) onMessage(msg, now);
      onProgress?.();
    });
    const onMessage = (msg: Buffer, now: number): void => {
      const r = WATCH.decodeResponse(msg) as { created: boolean; canceled: boolean; cancel_reason: string; events: { kv: { key: Buffer } | null }[] };
      if (r.created) created++;
      if (r.canceled) problem('canceled', `watcher ${w} canceled: ${r.cancel_reason}`);
      for (const ev of r.events) {
        const key = ev.kv?.key.toString() ?? '';
        const i = key.startsWith(FANOUT_KEY) ? Number(key.slice(FANOUT_KEY.length)) : NaN;
        if (!Number.isInteger(i) || i < 0 || i >= P) {
          problem('foreign', `watcher ${w}: unexpected event for '${key}'`);
          continue;
        }
        if (!Number.isNaN(got[i * W + w]!)) {
          problem('duplicates', `watcher ${w}: event ${i} twice`);
          continue;
        }
        if (i < lastSeen[w]!) problem('outOfOrder', `watcher ${w}: event ${i} after ${lastSeen[w]}`);
        lastSeen[w] = Math.max(lastSeen[w]!, i);
        got[i * W + w] = now;
        receivedPerPut[i]++;
      }
    };
    s.on('error', (err: Error) => {
      if (!closing) problem('errors', `watcher ${w}: ${err.message}`);
    });
    s.on('trailers', (h) => {
      if (!closing) problem('errors', `watcher ${w}: stream ended, grpc-status ${String(h['grpc-status'])} ${String(h['grpc-message'] ?? '')}`);
    });
    s.write(create);
    streams.push(s);
  }
  const waitFor = async (ok: () => boolean, timeoutMs: number): Promise<boolean> => {
    const deadline = performance.now() + timeoutMs;
    while (!ok()) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((r) => {
        const timer = setTimeout(r, Math.min(left, 50));
        onProgress = () => {
          if (!ok()) return;
          clearTimeout(timer);
          r();
        };
      });
    }
    onProgress = undefined;
    return true;
  };
  const allCreated = await waitFor(() => created === W, 120_000);
  tell({ ready: true, created, createMs: performance.now() - t0, allCreated, problems, firstProblem });
  if ((await next()) !== 'go') return;

  const putAt = new Float64Array(P);
  const ack = new Float64Array(P);
  let timeouts = 0;
  for (let i = 0; i < P; i++) {
    const req = PUT.encodeRequest({ key: Buffer.from(`${FANOUT_KEY}${i}`), value: VALUE });
    putAt[i] = performance.now();
    await writer.unary(PUT.path, req);
    ack[i] = performance.now() - putAt[i]!;
    if (!(await waitFor(() => receivedPerPut[i] === W, 10_000))) timeouts++;
    await sleep(5);
  }
  const lat: number[] = [];
  const slowest: number[] = [];
  let missing = 0;
  for (let i = 0; i < P; i++) {
    let max = NaN;
    for (let w = 0; w < W; w++) {
      const t = got[i * W + w]!;
      if (Number.isNaN(t)) {
        missing++;
        continue;
      }
      const d = t - putAt[i]!;
      lat.push(d);
      max = Number.isNaN(max) ? d : Math.max(max, d);
    }
    if (!Number.isNaN(max)) slowest.push(max);
  }
  tell({
    result: {
      p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100), slowestP50: percentile(slowest, 50),
      ackP50: percentile(ack, 50), samples: lat.length, missing, timeouts, problems, firstProblem,
    },
  });
  await next(); // 'done': the parent has read the proxy's RSS with every watcher still open
  closing = true;
  for (const c of [...conns, writer]) c.close();
}

/** A closed loop of calls on one connection, whichever client library; cb once per answer. */
type ReadLoop = (cb: (err: Error | null) => void) => void;

function readClient(kind: string, target: string, req: Buffer): { once(): Promise<Buffer>; loop: ReadLoop; close(): void } {
  if (kind === 'grpc-js') {
    const c = grpcJsClient(target);
    return {
      once: () => new Promise((res, rej) => c.makeUnaryRequest(RANGE.path, raw, raw, req, { deadline: Date.now() + 10_000 }, (err, out) => (err ? rej(err) : res(out!)))),
      loop: (cb) => c.makeUnaryRequest(RANGE.path, raw, raw, req, (err) => cb(err)),
      close: () => c.close(),
    };
  }
  if (kind !== 'http2') throw new Error(`--read-client ${kind}: http2 or grpc-js`);
  const c = new H2Channel(target);
  const framed = grpcFrame(req);
  return { once: () => c.unary(RANGE.path, req), loop: (cb) => c.call(RANGE.path, framed, cb), close: () => c.close() };
}

async function genRead(target: string): Promise<void> {
  const N = intOpt('clients', 1, 10_000);
  const S = Number(opts.seconds);
  if (!(S > 0)) throw new Error(`--seconds ${opts.seconds}: a positive number`);
  const req = RANGE.encodeRequest({ key: Buffer.from(READ_KEY), serializable: true });
  const clients = Array.from({ length: N }, () => readClient(String(opts['read-client']), target, req));
  // Each client checks one answer (and is connected) before the clock starts.
  await Promise.all(
    clients.map(async (c) => {
      const r = RANGE.decodeResponse(await c.once()) as { kvs: { key: Buffer; value: Buffer }[] };
      if (r.kvs.length !== 1 || r.kvs[0]!.key.toString() !== READ_KEY) throw new Error(`Range(serializable) ${READ_KEY} via ${target}: ${r.kvs.length} kvs`);
    }),
  );
  const lat: number[] = [];
  let measuring = false;
  let stop = false;
  let errors = 0;
  let firstError = '';
  let running = N;
  let allStopped: () => void = () => {};
  const stopped = new Promise<void>((r) => (allStopped = r));
  const issue = (c: (typeof clients)[number]): void => {
    const t = performance.now();
    c.loop((err) => {
      if (measuring) {
        if (err) {
          errors++;
          firstError ||= err.message;
        } else lat.push(performance.now() - t);
      }
      if (!stop) issue(c);
      else if (--running === 0) allStopped();
    });
  };
  for (const c of clients) issue(c);
  await sleep(1_000);
  measuring = true;
  tell({ measuring: true });
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  await sleep(S * 1000);
  measuring = false;
  tell({ measured: true });
  const wallMs = performance.now() - w0;
  const cpu = process.cpuUsage(cpu0);
  stop = true;
  await Promise.race([stopped, sleep(10_000)]);
  for (const c of clients) c.close();
  tell({
    result: {
      reads: lat.length, wallMs, perSecond: lat.length / (wallMs / 1000), cpuMs: (cpu.user + cpu.system) / 1000,
      latencies: lat.map((x) => Math.round(x * 1000) / 1000), errors, firstError,
    },
  });
}

// --- the parent: etcd, the targets, the table ------------------------------------------------------

const processes = new Set<ChildProcess>();
const tmpDirs: string[] = [];
function killAll(): void {
  for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

function track(p: ChildProcess): ChildProcess {
  processes.add(p);
  p.on('exit', () => processes.delete(p));
  return p;
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)])) return;
  p.kill('SIGKILL');
  await exited;
}

type TargetKind = 'routecat' | 'grpc-proxy' | 'direct';
const TARGET_NAMES: Record<TargetKind, string> = { routecat: 'routecat proxy', 'grpc-proxy': 'etcd grpc-proxy', direct: 'etcd direct' };

interface Target {
  readonly kind: TargetKind;
  readonly address: string;
  /** The proxy's pid; none for etcd direct. */
  readonly pid?: number;
  output(): string;
  /** False once the proxy process has exited. */
  alive(): boolean;
  stop(): Promise<void>;
}

function routecatCommand(): { cmd: string; pre: string[]; what: string } {
  const bin = join(ROOT, 'dist/routecat');
  if (existsSync(bin)) return { cmd: bin, pre: [], what: 'dist/routecat' };
  return { cmd: process.execPath, pre: ['--import', 'tsx', join(ROOT, 'src/main.ts')], what: 'node --import tsx src/main.ts' };
}

async function startTarget(kind: TargetKind, etcd: EtcdServer): Promise<Target> {
  const etcdAddr = etcd.endpoint.replace(/^http:\/\//, '');
  if (kind === 'direct') return { kind, address: etcdAddr, output: () => '', alive: () => true, stop: async () => {} };
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  let p: ChildProcess;
  if (kind === 'routecat') {
    const c = routecatCommand();
    p = spawn(c.cmd, [...c.pre, 'proxy', '--listen', address, '--etcd-endpoints', etcd.endpoint, '--health-port', '0', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'rcbench-grpc-proxy-'));
    tmpDirs.push(dir);
    p = spawn('etcd', ['grpc-proxy', 'start', `--endpoints=${etcdAddr}`, `--listen-addr=${address}`, `--data-dir=${join(dir, 'data')}`], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  }
  track(p);
  let out = '';
  const keep = (d: Buffer): void => void (out = (out + d.toString()).slice(-4000));
  p.stdout!.on('data', keep);
  p.stderr!.on('data', keep);
  const target: Target = { kind, address, pid: p.pid, output: () => out, alive: () => p.exitCode === null && p.signalCode === null, stop: () => stopProcess(p) };
  // Ready: a serializable read of the read key answers (for routecat: the cache has synced).
  const req = RANGE.encodeRequest({ key: Buffer.from(READ_KEY), serializable: true });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (p.exitCode !== null) throw new Error(`${TARGET_NAMES[kind]} exited (${p.exitCode}) while starting:\n${out}`);
    const probe = new H2Channel(address); // a new connection each time: a refused one stays dead
    const ok = await probe.unary(RANGE.path, req, 1_000).then((b: Buffer) => (RANGE.decodeResponse(b) as { kvs: unknown[] }).kvs.length === 1, () => false);
    probe.close();
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`${TARGET_NAMES[kind]} on ${address} not answering after 30 s:\n${out}`);
    await sleep(100);
  }
  return target;
}

interface WatchMetrics {
  watchers: number;
  streams: number;
  watchRpcs: number;
}

async function etcdWatchMetrics(etcd: EtcdServer): Promise<WatchMetrics> {
  const text = await (await fetch(`${etcd.endpoint}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const value = (re: RegExp): number => {
    const m = re.exec(text);
    if (!m) throw new Error(`etcd /metrics has no ${re.source}`);
    return Number(m[1]);
  };
  return {
    watchers: value(/^etcd_debugging_mvcc_watcher_total (\S+)$/m),
    streams: value(/^etcd_debugging_mvcc_watch_stream_total (\S+)$/m),
    watchRpcs: value(/^grpc_server_started_total\{[^}]*grpc_method="Watch"[^}]*\} (\S+)$/m),
  };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** User + system CPU time of the processes so far, ms (clock-tick resolution). */
function cpuMsOf(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
    ticks += Number(f[11]) + Number(f[12]); // utime, stime
  }
  return (ticks / CLK_TCK) * 1000;
}

/** The pid of the etcd serving from dataDir (tests/helpers/etcd.ts does not say). */
function etcdPid(dataDir: string): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('etcd') && argv.includes(join(dataDir, 'data')) && !argv.includes('grpc-proxy')) return Number(d);
    } catch {
      // gone
    }
  }
  throw new Error(`no etcd process with --data-dir ${join(dataDir, 'data')}`);
}

/** VmRSS and VmHWM of a process, MB. */
function rssMb(pid: number | undefined): { rss: number; peak: number } {
  if (pid === undefined) return { rss: NaN, peak: NaN };
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (f: string): number => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** The load generator: this script with --gen, talking JSON lines on stdout. */
class Generator {
  readonly #p: ChildProcess;
  readonly #lines: string[] = [];
  #waiting: (() => void) | undefined;
  #exited = false;

  constructor(args: string[]) {
    this.#p = track(spawn(process.execPath, ['--import', 'tsx', import.meta.filename, ...args], { stdio: ['pipe', 'pipe', 'inherit'] }));
    createInterface({ input: this.#p.stdout! }).on('line', (l) => {
      this.#lines.push(l);
      this.#waiting?.();
    });
    this.#p.on('exit', () => {
      this.#exited = true;
      this.#waiting?.();
    });
  }

  async next(timeoutMs: number): Promise<Record<string, any>> {
    const deadline = Date.now() + timeoutMs;
    while (this.#lines.length === 0) {
      if (this.#exited) throw new Error(`load generator exited (${this.#p.exitCode ?? this.#p.signalCode}) before answering`);
      if (Date.now() > deadline) throw new Error(`load generator silent for ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.#waiting = r;
        setTimeout(r, 500);
      });
      this.#waiting = undefined;
    }
    return JSON.parse(this.#lines.shift()!) as Record<string, any>;
  }

  send(line: string): void {
    this.#p.stdin!.write(`${line}\n`);
  }

  async done(): Promise<void> {
    if (!this.#exited) this.#p.stdin!.end();
    if (this.#exited) return;
    await Promise.race([new Promise<void>((r) => this.#p.once('exit', () => r())), sleep(10_000)]);
    await stopProcess(this.#p);
  }
}

interface WatchResult {
  delta: WatchMetrics;
  createMs: number;
  p50: number;
  p99: number;
  max: number;
  slowestP50: number;
  ackP50: number;
  rss: { rss: number; peak: number };
  /** CPU time of the target and etcd per put, all watchers served. */
  serverCpuPerPut: number;
  trouble: string;
}

interface ReadResult {
  /** CPU time of the target and etcd while measuring. */
  serverCpuMs: number;
  reads: number;
  wallMs: number;
  /** The load generator's CPU time while measuring. */
  cpuMs: number;
  latencies: number[];
  perSecond: number;
  p50: number;
  p99: number;
  clientCpuPct: number;
  trouble: string;
}

function troubleOf(problems: Record<string, number>, first: string[], extra: Record<string, number> = {}): string {
  const all = { ...problems, ...extra };
  const bad = Object.entries(all).filter(([, n]) => n > 0);
  return bad.length === 0 ? '' : `${bad.map(([k, n]) => `${k} ${n}`).join(', ')}${first.length > 0 ? ` (first: ${first.join('; ')})` : ''}`;
}

async function watchBench(kind: TargetKind, etcd: EtcdServer, before: WatchMetrics, target: Target, servers: readonly number[]): Promise<WatchResult> {
  const etcdAddr = etcd.endpoint.replace(/^http:\/\//, '');
  const gen = new Generator(['--gen', 'watch', '--target', target.address, '--etcd', etcdAddr, '--watchers', opts.watchers!, '--connections', opts.connections!, '--puts', opts.puts!]);
  try {
    const ready = await gen.next(150_000);
    if (!ready.allCreated) throw new Error(`${TARGET_NAMES[kind]}: only ${ready.created} of ${opts.watchers} watches created in 120 s; ${troubleOf(ready.problems, ready.firstProblem)}\n${target.output()}`);
    await sleep(500); // etcd's gauges follow the creates
    const after = await etcdWatchMetrics(etcd);
    const cpu0 = cpuMsOf(servers);
    gen.send('go');
    const { result: r } = await gen.next(Number(opts.puts) * 11_000 + 30_000);
    const serverCpuPerPut = (cpuMsOf(servers) - cpu0) / Number(opts.puts);
    const rss = rssMb(target.pid);
    gen.send('done');
    return {
      delta: { watchers: after.watchers - before.watchers, streams: after.streams - before.streams, watchRpcs: after.watchRpcs - before.watchRpcs },
      createMs: ready.createMs,
      p50: r.p50, p99: r.p99, max: r.max, slowestP50: r.slowestP50, ackP50: r.ackP50, rss, serverCpuPerPut,
      trouble: troubleOf(r.problems, r.firstProblem, { missing: r.missing, 'puts not seen by every watcher within 10 s': r.timeouts }),
    };
  } finally {
    await gen.done();
  }
}

async function readBench(target: Target, seconds: number, servers: readonly number[]): Promise<ReadResult> {
  const gen = new Generator(['--gen', 'read', '--target', target.address, '--clients', opts.clients!, '--seconds', String(seconds), '--read-client', opts['read-client']!]);
  try {
    if (!(await gen.next(60_000)).measuring) throw new Error('load generator: expected the start of the measurement');
    const cpu0 = cpuMsOf(servers);
    if (!(await gen.next(seconds * 1000 + 10_000)).measured) throw new Error('load generator: expected the end of the measurement');
    const serverCpuMs = cpuMsOf(servers) - cpu0;
    const { result: r } = await gen.next(30_000);
    return {
      serverCpuMs, reads: r.reads, wallMs: r.wallMs, cpuMs: r.cpuMs, latencies: r.latencies, perSecond: r.perSecond, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99),
      clientCpuPct: (r.cpuMs / r.wallMs) * 100, trouble: r.errors > 0 ? `${r.errors} errors (first: ${r.firstError})` : '',
    };
  } finally {
    await gen.done();
  }
}

/** The rounds of one target as one run: all reads over all measured time, percentiles over all. */
function mergeReads(rs: readonly ReadResult[]): ReadResult {
  const sum = (f: (r: ReadResult) => number): number => rs.reduce((a, r) => a + f(r), 0);
  const latencies = rs.flatMap((r) => r.latencies);
  const wallMs = sum((r) => r.wallMs);
  return {
    serverCpuMs: sum((r) => r.serverCpuMs), reads: sum((r) => r.reads), wallMs, cpuMs: sum((r) => r.cpuMs), latencies, perSecond: sum((r) => r.reads) / (wallMs / 1000),
    p50: percentile(latencies, 50), p99: percentile(latencies, 99), clientCpuPct: (sum((r) => r.cpuMs) / wallMs) * 100,
    trouble: rs.map((r) => r.trouble).filter(Boolean).join('; '),
  };
}

async function preload(etcd: EtcdServer, n: number): Promise<void> {
  const c = new H2Channel(etcd.endpoint.replace(/^http:\/\//, ''));
  try {
    const keys = [READ_KEY, ...Array.from({ length: n - 1 }, (_, i) => `/calico/resources/v3/projectcalico.org/workloadendpoints/bench/host-${i % 10}-k8s-pod${i}-eth0`)];
    for (let i = 0; i < keys.length; i += 100) {
      await Promise.all(keys.slice(i, i + 100).map((k) => c.unary(PUT.path, PUT.encodeRequest({ key: Buffer.from(k), value: VALUE }))));
    }
  } finally {
    c.close();
  }
}

const fmt = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a');
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}x` : 'n/a');

async function main(): Promise<void> {
  const W = intOpt('watchers', 1, 100_000);
  const C = intOpt('connections', 1, W);
  intOpt('puts', 1, 10_000);
  const N = intOpt('clients', 1, 10_000);
  const S = intOpt('seconds', 1, 600);
  const R = intOpt('rounds', 1, 100);
  const keys = intOpt('keys', 1, 1_000_000);
  const only = new Set(String(opts.only).split(','));
  const kinds = String(opts.targets).split(',') as TargetKind[];
  for (const k of kinds) if (!(k in TARGET_NAMES)) throw new Error(`--targets: unknown '${k}' (routecat, grpc-proxy, direct)`);
  for (const o of only) if (o !== 'watch' && o !== 'read') throw new Error(`--only: unknown '${o}' (watch, read)`);

  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(sig === 'SIGINT' ? 130 : 143));
  const load0 = loadavg();
  const etcd = await startEtcd();
  tmpDirs.push(etcd.dataDir);
  const etcdPidNow = etcdPid(etcd.dataDir);
  const servers = (t: Target): number[] => (t.pid === undefined ? [etcdPidNow] : [t.pid, etcdPidNow]);
  const watch = new Map<TargetKind, WatchResult>();
  const read = new Map<TargetKind, ReadResult>();
  const rc = routecatCommand();
  try {
    await preload(etcd, keys);
    const version = (await etcd.etcdctl('version')).split('\n')[0]!.replace(/^etcdctl version: /, '');
    console.log(`routecat proxy (${rc.what}) vs etcd grpc-proxy vs etcd direct: etcd ${version} on loopback holding ${keys} keys under ${PREFIX}; node ${process.version}, ${cpus().length} cores; load ${load0.map((x) => x.toFixed(2)).join(' ')}`);
    console.log(`load generator: ${opts['read-client'] === 'grpc-js' ? 'reads through @grpc/grpc-js (Buffer in/out), watches through ' : ''}gRPC over node:http2 directly (hand-framed, requests encoded once; lighter than @grpc/grpc-js or etcd3), in a child process of its own`);
    // Watches: one target at a time, each started fresh, so etcd's gauges count that target alone.
    for (const kind of only.has('watch') ? kinds : []) {
      const before = await etcdWatchMetrics(etcd);
      const target = await startTarget(kind, etcd);
      try {
        process.stdout.write(`  ${TARGET_NAMES[kind]}: ${W} watchers ...`);
        const r = await watchBench(kind, etcd, before, target, servers(target));
        watch.set(kind, r);
        process.stdout.write(` created in ${fmt(r.createMs, 0)} ms, fan-out p50 ${fmt(r.p50)} ms${r.trouble ? `; TROUBLE: ${r.trouble}` : ''}\n`);
        if (!target.alive()) throw new Error(`${TARGET_NAMES[kind]} died during the run:\n${target.output()}`);
      } finally {
        await target.stop();
      }
    }
    // Reads: every target up (fresh), --rounds rounds of --seconds/--rounds each, the order rotated
    // every round, so a change in the host's load falls on all of them alike.
    if (only.has('read')) {
      const targets = new Map<TargetKind, Target>();
      const parts = new Map<TargetKind, ReadResult[]>(kinds.map((k) => [k, []]));
      try {
        for (const kind of kinds) targets.set(kind, await startTarget(kind, etcd));
        for (let round = 0; round < R; round++) {
          for (let j = 0; j < kinds.length; j++) {
            const kind = kinds[(j + round) % kinds.length]!;
            process.stdout.write(`  round ${round + 1}/${R}, ${TARGET_NAMES[kind]}: ${N} read clients x ${fmt(S / R)} s ...`);
            const r = await readBench(targets.get(kind)!, S / R, servers(targets.get(kind)!));
            parts.get(kind)!.push(r);
            process.stdout.write(` ${fmt(r.perSecond, 0)} reads/s (client CPU ${fmt(r.clientCpuPct, 0)}%)${r.trouble ? `; TROUBLE: ${r.trouble}` : ''}\n`);
            if (!targets.get(kind)!.alive()) throw new Error(`${TARGET_NAMES[kind]} died during the run:\n${targets.get(kind)!.output()}`);
          }
        }
      } finally {
        for (const t of targets.values()) await t.stop();
      }
      for (const [kind, rs] of parts) if (rs.length > 0) read.set(kind, mergeReads(rs));
    }
  } finally {
    await etcd.cleanup();
  }
  const load1 = loadavg();

  // --- the table ---
  const cols: TargetKind[] = ['routecat', 'grpc-proxy', 'direct'];
  const head = `  ${''.padEnd(66)}${cols.map((k) => TARGET_NAMES[k].padStart(17)).join('')}${'rc/grpc-proxy'.padStart(15)}${'rc/direct'.padStart(11)}`;
  const figures: FigureInput[] = [];
  let section = ''; // what the rows measure, for the report's metric names
  const row = (label: string, unit: string, better: 'lower' | 'higher', pick: (k: TargetKind) => number, digits: number, refs: TargetKind[] = ['grpc-proxy', 'direct']): void => {
    const v = (k: TargetKind): number => pick(k);
    const cells = cols.map((k) => fmt(v(k), digits).padStart(17)).join('');
    const r1 = refs.includes('grpc-proxy') ? ratio(v('routecat'), v('grpc-proxy')) : '';
    const r2 = refs.includes('direct') ? ratio(v('routecat'), v('direct')) : '';
    console.log(`  ${`${label} (${unit})`.padEnd(66)}${cells}${r1.padStart(15)}${r2.padStart(11)}`);
    for (const ref of refs) {
      figures.push({ suite: 'proxy', metric: `${section}: ${label}`, routecat: v('routecat'), reference: v(ref), referenceName: TARGET_NAMES[ref], unit, better });
    }
  };
  const w = (k: TargetKind): WatchResult | undefined => watch.get(k);
  const rd = (k: TargetKind): ReadResult | undefined => read.get(k);
  console.log('');
  if (watch.size > 0) {
    console.log(`1. ${W} watchers on ${PREFIX} (${C} client connections, ${W / C} Watch streams each, one create per stream); ${opts.puts} puts direct to etcd, one at a time`);
    console.log(head);
    section = `${W} watchers on ${PREFIX} (${C} connections)`;
    row('upstream watchers (etcd watcher_total delta)', 'count', 'lower', (k) => w(k)?.delta.watchers ?? NaN, 0);
    row('upstream watch streams (etcd watch_stream_total delta)', 'count', 'lower', (k) => w(k)?.delta.streams ?? NaN, 0);
    row('upstream Watch RPCs started (etcd grpc metrics delta)', 'count', 'lower', (k) => w(k)?.delta.watchRpcs ?? NaN, 0);
    row('fan-out latency p50, before put -> event at watcher', 'ms', 'lower', (k) => w(k)?.p50 ?? NaN, 2);
    row('fan-out latency p99', 'ms', 'lower', (k) => w(k)?.p99 ?? NaN, 2);
    row('fan-out latency max', 'ms', 'lower', (k) => w(k)?.max ?? NaN, 2, []);
    row(`slowest of ${W} watchers per put, p50`, 'ms', 'lower', (k) => w(k)?.slowestP50 ?? NaN, 2);
    row('put acknowledged by etcd, p50 (for scale)', 'ms', 'lower', (k) => w(k)?.ackP50 ?? NaN, 2, []);
    row(`server CPU per put, all ${W} watchers served (target + etcd)`, 'ms', 'lower', (k) => w(k)?.serverCpuPerPut ?? NaN, 1);
    row(`all ${W} watches created`, 'ms', 'lower', (k) => w(k)?.createMs ?? NaN, 0);
    row('proxy RSS with the watchers open (VmRSS)', 'MB', 'lower', (k) => w(k)?.rss.rss ?? NaN, 1, ['grpc-proxy']);
    row('proxy peak RSS (VmHWM)', 'MB', 'lower', (k) => w(k)?.rss.peak ?? NaN, 1, ['grpc-proxy']);
    for (const k of cols) if (w(k)?.trouble) console.log(`  TROUBLE via ${TARGET_NAMES[k]}: ${w(k)!.trouble}`);
  }
  if (read.size > 0) {
    console.log(`\n2. serializable Range of one key under ${PREFIX}: ${N} clients (one connection each, one request in flight), ${S} s per target in ${R} rounds (order rotated), each after 1 s warm-up`);
    console.log(head);
    section = `serializable Range, ${N} clients`;
    row('throughput', 'reads/s', 'higher', (k) => rd(k)?.perSecond ?? NaN, 0);
    row('latency p50', 'ms', 'lower', (k) => rd(k)?.p50 ?? NaN, 2);
    row('latency p99', 'ms', 'lower', (k) => rd(k)?.p99 ?? NaN, 2);
    row('server CPU per 1,000 reads (target + etcd)', 'ms', 'lower', (k) => ((rd(k)?.serverCpuMs ?? NaN) / (rd(k)?.reads ?? NaN)) * 1000, 0);
    row('load generator CPU (100% = one core saturated)', '%', 'lower', (k) => rd(k)?.clientCpuPct ?? NaN, 0, []);
    for (const k of cols) if (rd(k)?.trouble) console.log(`  TROUBLE via ${TARGET_NAMES[k]}: ${rd(k)!.trouble}`);
  }
  console.log(`  (load average ${load0.map((x) => x.toFixed(2)).join(' ')} -> ${load1.map((x) => x.toFixed(2)).join(' ')}; ${cpus().length} cores shared by etcd, the proxy and the load generator)`);
  recordFigures(figures);
}

if (opts.gen !== undefined) {
  const run = opts.gen === 'watch' ? genWatch(String(opts.target), String(opts.etcd)) : opts.gen === 'read' ? genRead(String(opts.target)) : Promise.reject(new Error(`--gen ${opts.gen}: watch or read`));
  run.then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench-proxy load generator: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`\nbench-proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exit(1);
    },
  );
}
