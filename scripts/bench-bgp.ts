/**
 * DOC: BGP benchmarks: routecat's BgpSpeaker beside BIRD 2 on the same feed in the same run
 * (figures only, never pass/fail).
 *  1. ingest: one iBGP peer (the feeder) sends N IPv4 /32s (~810 per UPDATE, one attribute set) and
 *     End-of-RIB; time from the first UPDATE written to all N in the speaker's Loc-RIB, and the
 *     speaker's peak RSS (VmHWM).
 *  2. reflection: the feeder sends N /32s to a route reflector with C other clients connected;
 *     time from the first UPDATE written until the last client has all N.
 *  3. kernel: the same feed into the kernel: routecat's BgpSpeaker + BgpFib (speaker.onFib ->
 *     fib.apply, as `routecat node` wires them; proto 193) beside BIRD with `protocol kernel
 *     { ipv4 { export all; }; }` (defaults otherwise); time from the first UPDATE written until
 *     the DUT namespace's main table holds all N, and the DUT's peak RSS. Only with --only kernel.
 *
 *   node --import tsx scripts/bench-bgp.ts [--ingest 1000000] [--reflect 100000] [--clients 10]
 *        [--kernel 100000,1000000] [--only ingest,reflect,kernel] [--dut bird,routecat]
 *
 * Each case gets two fresh network namespaces (`rcbb-<pid>-...`) joined by one veth: the device
 * under test (routecat: scripts/bench-bgp-target.ts bundled with esbuild and run by plain node, so
 * no loader thread sits in its RSS; BIRD: `bird -f`, no kernel protocol) at 10.201.0.1, and the
 * peers at 10.201.0.10, .11, ... (one address each on the other end) in one process: this file
 * run as `--role peers '<json>'`. UPDATEs are pre-encoded with the codec into one Buffer before
 * connecting, so the feeder's cost is one socket write. Receivers count distinct /32s with a
 * byte-walking decoder into a bitset. Clocks: process.hrtime (CLOCK_MONOTONIC, shared by all
 * processes on the host). BIRD ingest completion is polled on its control socket every 5 ms
 * (`show protocols all feeder`, an O(1) counter), so BIRD's figure carries up to ~5 ms of
 * polling slack; `show route count` (a walk of the table) cross-checks the count once, after the
 * clock has stopped. Kernel completion is read from the kernel for both DUTs alike:
 * /proc/<dut pid>/net/fib_triestat ("Main: Prefixes", an in-kernel walk of the namespace's trie, no
 * process spawned and no route text formatted; ~0.1 s of system time at 1M routes, against ~0.5 s
 * for /proc/net/route and ~6 s for `ip route show | wc -l`), read by the orchestrator at a
 * predicted completion time (remaining / observed rate), between 2x and 10x its own read time
 * apart, so it costs at most ~10% of one core and the row shows the bracket [last read short of N,
 * first read with all N]; `ip -4 route show proto 193|bird | wc -l` checks the count once, after
 * the clock has stopped (rcbk-* namespaces). Each row notes the host's 1-minute load average at the start of the feed:
 * the cores are shared, so a loaded host stretches every figure. Namespaces (IPv6 disabled) and
 * processes are removed at the end, on failure and on Ctrl-C (tests/helpers/netns.ts); the peers
 * process and the routecat target also exit when the bench dies.
 *
 * As a library (tests/unit/bgp-feeder.test.ts): buildFeed() and PrefixTally.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createConnection, type Socket } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Framer, decodeMessage, encodeMessage, endOfRib, packUpdates } from '../src/bgp/codec/index.ts';
import type { CodecOptions, Nlri, PathAttributes } from '../src/bgp/types.ts';
import { createLab, sweepStaleNamespaces, type Lab, type LabProcess } from '../tests/helpers/netns.ts';
import { recordFigures } from './bench-record.ts';

// ---------------------------------------------------------------------------------------------
// The feed
// ---------------------------------------------------------------------------------------------

/** First prefix of every feed: 100.64.0.0/10 (RFC 6598) holds 4,194,304 /32s. */
export const FEED_BASE = '100.64.0.0';
export const FEED_MAX = 1 << 22;
export const BENCH_AS = 64512;
/** The feeder's attribute set (plus NEXT_HOP = its address). */
export const FEED_ATTRIBUTES: PathAttributes = { origin: 0, asPath: [], localPref: 100 };
/** Encode options: an empty AS_PATH reads the same with 2- and 4-octet ASNs; no ADD-PATH. */
export const FEED_CODEC: CodecOptions = { as4: true, ibgp: true };

export function ipv4ToInt(a: string): number {
  const p = a.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`invalid IPv4 address '${a}'`);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

export function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The i-th prefix of a feed. */
export function feedPrefix(i: number, base = FEED_BASE): string {
  return `${intToIpv4((ipv4ToInt(base) + i) >>> 0)}/32`;
}

export interface Feed {
  /** The UPDATEs carrying the N prefixes, in order. */
  readonly updates: readonly Buffer[];
  /** The IPv4 End-of-RIB marker. */
  readonly endOfRib: Buffer;
}

/** N /32s from `base`, packed as many per UPDATE as fit, with FEED_ATTRIBUTES and `nextHop`. */
export function buildFeed(count: number, nextHop: string, base = FEED_BASE): Feed {
  if (!Number.isInteger(count) || count < 1 || count > FEED_MAX) throw new Error(`feed size ${count}: 1..${FEED_MAX}`);
  const b = ipv4ToInt(base);
  const nlri: Nlri[] = new Array(count);
  for (let i = 0; i < count; i++) nlri[i] = { prefix: `${intToIpv4((b + i) >>> 0)}/32` };
  const updates = packUpdates({ afiSafi: 'ipv4-unicast', attributes: FEED_ATTRIBUTES, nextHop, nlri, withdrawn: [] }, FEED_CODEC);
  return { updates, endOfRib: endOfRib('ipv4-unicast', FEED_CODEC) };
}

// ---------------------------------------------------------------------------------------------
// Counting received /32s without building objects
// ---------------------------------------------------------------------------------------------

/**
 * Distinct /32s of [base, base + count) currently announced to one receiver, fed whole UPDATE
 * frames (IPv4 classic fields only; no ADD-PATH). Anything else is counted in `foreign`.
 */
export class PrefixTally {
  readonly #base: number;
  readonly #count: number;
  readonly #bits: Uint8Array;
  present = 0;
  foreign = 0;
  endOfRib = false;

  constructor(count: number, base = FEED_BASE) {
    this.#base = ipv4ToInt(base);
    this.#count = count;
    this.#bits = new Uint8Array((count + 7) >>> 3);
  }

  get complete(): boolean {
    return this.present === this.#count;
  }

  /** One UPDATE frame (header included). */
  update(frame: Buffer): void {
    const end = frame.length;
    let p = 19;
    const wl = frame.readUInt16BE(p);
    p += 2;
    this.#walk(frame, p, p + wl, false);
    p += wl;
    const al = frame.readUInt16BE(p);
    p += 2 + al;
    if (wl === 0 && al === 0 && p === end) this.endOfRib = true;
    this.#walk(frame, p, end, true);
  }

  #walk(f: Buffer, p: number, end: number, announce: boolean): void {
    while (p < end) {
      const len = f[p++]!;
      const bytes = (len + 7) >>> 3;
      if (len !== 32) {
        this.foreign++;
        p += bytes;
        continue;
      }
      const i = (f.readUInt32BE(p) - this.#base) >>> 0;
      p += 4;
      if (i >= this.#count) {
        this.foreign++;
        continue;
      }
      const m = 1 << (i & 7);
      const had = (this.#bits[i >>> 3]! & m) !== 0;
      if (announce && !had) {
        this.#bits[i >>> 3]! |= m;
        this.present++;
      } else if (!announce && had) {
        this.#bits[i >>> 3]! &= ~m;
        this.present--;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal BGP peer: OPEN, KEEPALIVEs, raw UPDATE frames out and in
// ---------------------------------------------------------------------------------------------

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface MiniPeerOptions {
  readonly localAddress: string;
  readonly remoteAddress: string;
  readonly port: number;
  readonly asn: number;
  readonly holdTime: number;
  readonly onUpdate?: (frame: Buffer) => void;
  readonly onFailure: (why: string) => void;
}

class MiniPeer {
  readonly #o: MiniPeerOptions;
  #socket: Socket | undefined;
  #framer = new Framer();
  #keepalive: NodeJS.Timeout | undefined;
  #established = false;
  #closing = false;
  #onEstablished: (() => void) | undefined;

  constructor(o: MiniPeerOptions) {
    this.#o = o;
  }

  /** Connect (retrying refused connections for 20 s) and resolve once Established. */
  async open(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        this.#socket = await new Promise<Socket>((res, rej) => {
          const s = netConnect({ host: this.#o.remoteAddress, port: this.#o.port, localAddress: this.#o.localAddress });
          s.once('connect', () => {
            s.off('error', rej);
            res(s);
          });
          s.once('error', rej);
        });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
    const s = this.#socket;
    s.setNoDelay(true);
    const established = new Promise<void>((res) => (this.#onEstablished = res));
    s.on('data', (chunk: Buffer) => {
      try {
        for (const frame of this.#framer.push(chunk)) this.#frame(frame);
      } catch (err) {
        this.#o.onFailure(`${this.#o.localAddress}: ${String(err)}`);
      }
    });
    s.on('error', (err) => this.#o.onFailure(`${this.#o.localAddress}: ${err.message}`));
    s.on('close', () => {
      if (!this.#closing) this.#o.onFailure(`${this.#o.localAddress}: connection closed by ${this.#o.remoteAddress}`);
    });
    s.write(
      encodeMessage(
        {
          type: 'open',
          version: 4,
          myAs: this.#o.asn,
          holdTime: this.#o.holdTime,
          bgpId: this.#o.localAddress,
          capabilities: { multiprotocol: ['ipv4-unicast'], as4: this.#o.asn, routeRefresh: true },
        },
        FEED_CODEC,
      ),
    );
    await established;
  }

  #frame(frame: Buffer): void {
    switch (frame[18]) {
      case 2:
        this.#o.onUpdate?.(frame);
        return;
      case 4:
        if (!this.#established) {
          this.#established = true;
          this.#onEstablished?.();
        }
        return;
      case 1: {
        const m = decodeMessage(frame, FEED_CODEC);
        if (m.type !== 'open') return;
        const hold = Math.min(m.holdTime, this.#o.holdTime);
        this.#socket!.write(KEEPALIVE);
        if (hold > 0) this.#keepalive = setInterval(() => this.#socket?.write(KEEPALIVE), (hold * 1000) / 3);
        return;
      }
      case 3: {
        const m = decodeMessage(frame, FEED_CODEC);
        if (m.type === 'notification') this.#o.onFailure(`${this.#o.localAddress}: NOTIFICATION ${m.code}/${m.subcode} ${m.shutdownText ?? ''}`);
        return;
      }
      default:
        return;
    }
  }

  /** Write bytes; resolves when they are handed to the kernel. */
  write(buf: Buffer): Promise<void> {
    return new Promise((res, rej) => this.#socket!.write(buf, (err) => (err ? rej(err) : res())));
  }

  close(): void {
    this.#closing = true;
    clearInterval(this.#keepalive);
    this.#socket?.destroy();
  }
}

const KEEPALIVE = encodeMessage({ type: 'keepalive' }, FEED_CODEC);

// ---------------------------------------------------------------------------------------------
// The peers process (runs in the peers namespace)
// ---------------------------------------------------------------------------------------------

interface PeersConfig {
  readonly dut: string;
  readonly port: number;
  readonly feeder: string;
  readonly receivers: readonly string[];
  readonly count: number;
  readonly holdTime: number;
}

function emit(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** A child of the bench exits when the bench does (it is reparented), even after a SIGKILL. */
export function exitWithParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 500).unref();
}

async function peersMain(c: PeersConfig): Promise<void> {
  const fail = (why: string): void => {
    emit({ type: 'error', message: why });
    process.exit(1);
  };
  exitWithParent();
  const tb = now();
  const feed = buildFeed(c.count, c.feeder);
  const blob = Buffer.concat([...feed.updates, feed.endOfRib]);
  const messages = feed.updates.length;
  (globalThis as { gc?: () => void }).gc?.();
  emit({ type: 'built', messages, bytes: blob.length, ms: now() - tb });

  // Receivers first, each until it has our (empty) table's End-of-RIB, so that they are in the
  // reflector's update group before the feed starts.
  let t0 = 0;
  let remaining = c.receivers.length;
  const done: number[] = [];
  const tallies = c.receivers.map(() => new PrefixTally(c.count));
  const eorSeen: Array<() => void> = [];
  const eor = c.receivers.map(() => new Promise<void>((res) => eorSeen.push(res)));
  const receivers = c.receivers.map(
    (addr, i) =>
      new MiniPeer({
        localAddress: addr,
        remoteAddress: c.dut,
        port: c.port,
        asn: BENCH_AS,
        holdTime: c.holdTime,
        onFailure: fail,
        onUpdate: (frame) => {
          const t = tallies[i]!;
          const wasComplete = t.complete;
          t.update(frame);
          if (t.endOfRib) eorSeen[i]!();
          if (t.complete && !wasComplete && t0 > 0) {
            done[i] = now();
            if (--remaining === 0) {
              const last = Math.max(...done);
              emit({ type: 'reflected', t0, tLast: last, perClientMs: done.map((d) => Math.round(d - t0)), foreign: tallies.reduce((s, x) => s + x.foreign, 0) });
            }
          }
        },
      }),
  );
  await Promise.all(receivers.map((r) => r.open()));
  await Promise.race([Promise.all(eor), sleep(10_000)]);
  emit({ type: 'receivers-up', n: receivers.length, endOfRib: tallies.filter((t) => t.endOfRib).length });

  const feeder = new MiniPeer({ localAddress: c.feeder, remoteAddress: c.dut, port: c.port, asn: BENCH_AS, holdTime: c.holdTime, onFailure: fail });
  await feeder.open();
  emit({ type: 'feeder-up' });
  t0 = now();
  emit({ type: 'first-update', t0 });
  await feeder.write(blob);
  emit({ type: 'sent', t: now() });
  process.once('SIGTERM', () => {
    for (const r of [feeder, ...receivers]) r.close();
    process.exit(0);
  });
}

// ---------------------------------------------------------------------------------------------
// The orchestrator
// ---------------------------------------------------------------------------------------------

const ROOT = resolve(import.meta.dirname ?? '.', '..'); // Deno types dirname as optional
const SELF = fileURLToPath(import.meta.url);
const DUT_ADDR = '10.201.0.1';
const peerAddr = (i: number): string => `10.201.0.${10 + i}`;
const HOLD = 90;

interface Line {
  readonly type: string;
  readonly [k: string]: unknown;
}

function lines(p: LabProcess): Line[] {
  const out: Line[] = [];
  for (const l of p.output().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as Line);
    } catch {
      // partial line
    }
  }
  return out;
}

/** Wait for a JSON line of `type` from any of `procs`; a line of type 'error' or an exit fails. */
async function waitLine(procs: readonly LabProcess[], type: string, timeoutMs: number, what: string): Promise<Line> {
  const start = Date.now();
  for (;;) {
    for (const p of procs) {
      const ls = lines(p);
      const err = ls.find((l) => l.type === 'error');
      if (err) throw new Error(`${what}: ${String(err.message)}`);
      const hit = ls.find((l) => l.type === type);
      if (hit) return hit;
      if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${what}: process exited: ${p.output().trim().slice(-2000)}`);
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: no '${type}' after ${timeoutMs} ms`);
    await sleep(5);
  }
}

function vmHwmKiB(pid: number): { hwm: number; rss: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { hwm: get('VmHWM'), rss: get('VmRSS') };
}

/** BIRD's control socket (a path, so it is reachable from the root namespace): one command at a time. */
class BirdControl {
  readonly #s: Socket;
  #buf = '';
  #waiter: ((reply: string) => void) | undefined;

  private constructor(s: Socket) {
    this.#s = s;
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      this.#buf += d;
      // A reply ends with a line whose 4-digit code is followed by a space.
      const m = /(^|\n)\d{4} [^\n]*\n/.exec(this.#buf);
      if (m && this.#waiter) {
        const end = m.index + m[0].length;
        const reply = this.#buf.slice(0, end);
        this.#buf = this.#buf.slice(end);
        const w = this.#waiter;
        this.#waiter = undefined;
        w(reply);
      }
    });
  }

  static async open(path: string): Promise<BirdControl> {
    const s = await new Promise<Socket>((res, rej) => {
      const c = createConnection(path, () => res(c));
      c.once('error', rej);
    });
    const b = new BirdControl(s);
    await new Promise<string>((res) => (b.#waiter = res)); // "0001 BIRD 2.x ready."
    return b;
  }

  cmd(text: string): Promise<string> {
    return new Promise((res) => {
      this.#waiter = res;
      this.#s.write(`${text}\n`);
    });
  }

  close(): void {
    this.#s.destroy();
  }
}

type CaseKind = 'ingest' | 'reflect' | 'kernel';

function birdConf(kind: CaseKind, peers: readonly string[]): string {
  const head = ['log stderr { warning, error, fatal, bug };', `router id ${DUT_ADDR};`, 'protocol device { scan time 10; }'];
  // One passive feeder session; into the kernel, BGP -> master4 -> the main table (proto bird)
  // with learn, merge paths and scan time at their defaults.
  const feeder = (ipv4: string) => `protocol bgp feeder {
  local ${DUT_ADDR} as ${BENCH_AS};
  neighbor ${peers[0]} as ${BENCH_AS};
  passive on;
  direct;
  hold time ${HOLD};
  ipv4 { ${ipv4} };
}`;
  if (kind === 'kernel') return [...head, 'protocol kernel { ipv4 { export all; }; }', feeder('import all; export none; gateway direct;'), ''].join('\n');
  if (kind === 'ingest') return [...head, feeder('import all; export none;'), ''].join('\n');
  return [
    ...head,
    `template bgp rrc {
  local ${DUT_ADDR} as ${BENCH_AS};
  passive on;
  direct;
  hold time ${HOLD};
  rr client;
  rr cluster id ${DUT_ADDR};
  ipv4 { import all; export all; };
}`,
    ...peers.map((a, i) => `protocol bgp ${i === 0 ? 'feeder' : `c${i}`} from rrc { neighbor ${a} as ${BENCH_AS}; }`),
    '',
  ].join('\n');
}

interface CaseResult {
  readonly ms: number;
  readonly hwmKiB: number;
  readonly extra: string;
}

interface Bench {
  readonly dir: string;
  readonly target: { cmd: string; args: string[] };
}

async function addressLab(lab: Lab, peers: number): Promise<{ dutNs: string; peersNs: string }> {
  const dutNs = await lab.addNs('dut');
  const peersNs = await lab.addNs('peers');
  // IPv4 only: no IPv6 on the links (no DAD, no router solicitations on the wire).
  for (const ns of [dutNs, peersNs]) await lab.sh(ns, 'sysctl -qw net.ipv6.conf.default.disable_ipv6=1 && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
  await lab.veth(dutNs, 'dut0', peersNs, 'peers0');
  await lab.sh(dutNs, `ip addr add ${DUT_ADDR}/24 dev dut0 && ip link set dut0 up`);
  await lab.sh(peersNs, [...Array.from({ length: peers }, (_, i) => `ip addr add ${peerAddr(i)}/24 dev peers0`), 'ip link set peers0 up'].join(' && '));
  for (let i = 0; ; i++) {
    if ((await lab.exec(peersNs, 'ping', ['-c', '1', '-W', '1', DUT_ADDR], { timeoutMs: 3_000 })).code === 0) break;
    if (i > 20) throw new Error('no ping over the veth');
  }
  return { dutNs, peersNs };
}

const TIMEOUT = 600_000;

/** Routes in the main table of `pid`'s network namespace (merged with local: count a baseline first). */
function kernelRouteCount(pid: number): number {
  const m = /^Main:[^]*?Prefixes:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/net/fib_triestat`, 'utf8'));
  if (!m) throw new Error(`no 'Main: ... Prefixes:' in /proc/${pid}/net/fib_triestat`);
  return Number(m[1]);
}

interface KernelDone {
  readonly tDone: number;
  /** The last read short of N (the true completion lies in (tBefore, tDone]). */
  readonly tBefore: number;
  readonly polls: number;
  readonly lastReadMs: number;
}

/**
 * Waits until the kernel of `pid`'s namespace holds `baseline + n` routes, reading
 * kernelRouteCount() at the predicted completion time (remaining / rate since the first route),
 * clamped to [2x, 10x] the last read's own duration (5..250 ms at small tables).
 */
async function waitKernelRoutes(pid: number, baseline: number, n: number, t0: number, alive: () => void): Promise<KernelDone> {
  let polls = 0;
  let tBefore = t0;
  let first: { t: number; c: number } | undefined;
  for (;;) {
    const ts = now();
    const c = kernelRouteCount(pid) - baseline;
    const te = now();
    polls++;
    const cost = te - ts;
    if (c >= n) return { tDone: te, tBefore, polls, lastReadMs: cost };
    tBefore = te;
    alive();
    if (te - t0 > TIMEOUT) throw new Error(`kernel holds ${c} of ${n} routes after ${TIMEOUT} ms`);
    if (c > 0 && !first) first = { t: te, c };
    const rate = first && c > first.c ? (c - first.c) / (te - first.t) : 0;
    const predicted = rate > 0 ? (n - c) / rate : Infinity;
    await sleep(Math.min(Math.max(predicted, 2 * cost, 5), Math.max(10 * cost, 250)));
  }
}

/** After a case: wait (at most 15 s) until the kernel is done tearing down the namespace (system CPU < 0.25 core). */
async function settleKernel(): Promise<void> {
  const sys = (): number => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
    return (f[3] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0); // system + irq + softirq, in USER_HZ ticks
  };
  const start = Date.now();
  let calm = 0;
  while (Date.now() - start < 15_000 && calm < 2) {
    const a = sys();
    await sleep(500);
    calm = (sys() - a) / 100 / 0.5 < 0.25 ? calm + 1 : 0;
  }
}

async function runCase(b: Bench, kind: CaseKind, dut: 'routecat' | 'bird', n: number, clients: number): Promise<CaseResult> {
  const peers = kind === 'reflect' ? Array.from({ length: clients + 1 }, (_, i) => peerAddr(i)) : [peerAddr(0)];
  const lab = createLab(kind === 'kernel' ? 'rcbk' : 'rcbb');
  let ctl: BirdControl | undefined;
  try {
    const { dutNs, peersNs } = await addressLab(lab, peers.length);
    let dutProc: LabProcess;
    let dutPid: number;
    const sock = join(b.dir, `bird-${kind}.ctl`);
    if (dut === 'routecat') {
      const cfg = { n, listen: DUT_ADDR, peers, clusterId: kind === 'reflect' ? DUT_ADDR : undefined, holdTime: HOLD, fib: kind === 'kernel' };
      dutProc = lab.spawn(dutNs, b.target.cmd, [...b.target.args, JSON.stringify(cfg)]);
      await waitLine([dutProc], 'listening', 30_000, 'routecat target');
      dutPid = dutProc.child.pid!;
    } else {
      const conf = join(b.dir, `bird-${kind}.conf`);
      writeFileSync(conf, birdConf(kind, peers));
      const check = await lab.exec(dutNs, 'bird', ['-p', '-c', conf]);
      if (check.code !== 0) throw new Error(`bird.conf does not parse: ${check.stderr}${check.stdout}`);
      dutProc = lab.spawn(dutNs, 'bird', ['-f', '-c', conf, '-s', sock]);
      for (let i = 0; !existsSync(sock); i++) {
        if (i > 200 || dutProc.child.exitCode !== null) throw new Error(`bird did not start: ${dutProc.output()}`);
        await sleep(25);
      }
      ctl = await BirdControl.open(sock);
      dutPid = dutProc.child.pid!;
    }
    const rssBefore = vmHwmKiB(dutPid).rss;
    const routesBefore = kind === 'kernel' ? kernelRouteCount(dutPid) : 0;
    // The host's 1-minute load average as the feed starts: others' work on the same cores shows here.
    const loadBefore = loadavg()[0]!;

    const peersCfg: PeersConfig = { dut: DUT_ADDR, port: 179, feeder: peers[0]!, receivers: peers.slice(1), count: n, holdTime: HOLD };
    const pp = lab.spawn(peersNs, process.execPath, ['--expose-gc', '--max-old-space-size=4096', '--import', 'tsx', SELF, '--role', 'peers', JSON.stringify(peersCfg)]);
    const first = await waitLine([pp, dutProc], 'first-update', 120_000, 'peers');
    const t0 = first.t0 as number;
    let tDone: number;
    let extra = '';
    if (kind === 'kernel') {
      const alive = (): void => {
        if (dutProc.child.exitCode !== null || dutProc.child.signalCode !== null) throw new Error(`${dut} exited: ${dutProc.output().slice(-2000)}`);
        const err = [...lines(pp), ...lines(dutProc)].find((l) => l.type === 'error');
        if (err) throw new Error(`${dut}: ${String(err.message)}`);
      };
      const k = await waitKernelRoutes(dutPid, routesBefore, n, t0, alive);
      tDone = k.tDone;
      // The kernel's own listing, once, after the clock stopped: every route really landed, and is the DUT's.
      const tc = now();
      const listed = Number((await lab.sh(dutNs, `ip -4 route show proto ${dut === 'bird' ? 'bird' : '193'} | wc -l`, { timeoutMs: 300_000 })).trim());
      if (listed !== n) throw new Error(`${dut}: the kernel lists ${listed} routes of proto ${dut === 'bird' ? 'bird' : '193'}, want ${n}`);
      extra = `kernel complete in (${(k.tBefore - t0).toFixed(0)}, ${(k.tDone - t0).toFixed(0)}] ms by ${k.polls} fib_triestat reads (last ${k.lastReadMs.toFixed(0)} ms); 'ip route show proto ${dut === 'bird' ? 'bird' : '193'}' lists ${listed} (${((now() - tc) / 1000).toFixed(1)} s)`;
      if (dut === 'routecat') {
        const fib = lines(dutProc).find((l) => l.type === 'fib-applied');
        if (fib) extra += `; BgpFib.apply returned for all at ${((fib.t as number) - t0).toFixed(0)} ms (${String(fib.added)} added, ${String(fib.failed)} failed)`;
        const kids = childPids(dutPid).map((p) => vmHwmKiB(p).hwm).filter((x) => Number.isFinite(x));
        if (kids.length > 0) extra += `; + ${kids.length} child (ip -batch) peak ${mib(Math.max(...kids))}`;
      }
    } else if (kind === 'reflect') {
      const r = await waitLine([pp, ...(dut === 'routecat' ? [dutProc] : [])], 'reflected', TIMEOUT, `${dut} reflection`);
      tDone = r.tLast as number;
      const per = r.perClientMs as number[];
      extra = `first client ${Math.min(...per)} ms, last ${Math.max(...per)} ms`;
      if ((r.foreign as number) > 0) extra += `, ${String(r.foreign)} foreign prefixes seen`;
    } else if (dut === 'routecat') {
      const r = await waitLine([dutProc, pp], 'complete', TIMEOUT, 'routecat ingest');
      tDone = r.t as number;
      const fib = await waitLine([dutProc], 'fib-complete', 30_000, 'routecat FIB stream').catch(() => undefined);
      if (fib) extra = `onFib delivered all ${n} at ${((fib.t as number) - t0).toFixed(0)} ms`;
    } else {
      const start = Date.now();
      for (;;) {
        const out = await ctl!.cmd('show protocols all feeder');
        const m = /Routes:\s+(\d+) imported/.exec(out);
        if (m && Number(m[1]) >= n) {
          tDone = now();
          break;
        }
        if (dutProc.child.exitCode !== null) throw new Error(`bird exited: ${dutProc.output()}`);
        const err = lines(pp).find((l) => l.type === 'error');
        if (err) throw new Error(`peers: ${String(err.message)}`);
        if (Date.now() - start > TIMEOUT) throw new Error(`BIRD ingest: ${m?.[1] ?? '?'} of ${n} after ${TIMEOUT} ms`);
        await sleep(5);
      }
      // Cross-check with the table itself (a walk of all routes, so only once, after the clock stopped).
      const tc = now();
      const count = /(\d+) of (\d+) routes for (\d+) networks/.exec(await ctl!.cmd('show route count'));
      if (!count || Number(count[3]) !== n) throw new Error(`BIRD ingest: 'show route count' says ${count?.[0] ?? 'nothing'}, want ${n} networks`);
      extra = `'show route count': ${count[3]} networks, answered in ${(now() - tc).toFixed(0)} ms`;
    }
    const sent = lines(pp).find((l) => l.type === 'sent');
    if (sent) extra = [`feed written in ${((sent.t as number) - t0).toFixed(0)} ms`, extra].filter(Boolean).join('; ');
    await sleep(500);
    const mem = vmHwmKiB(dutPid);
    extra += `${extra ? '; ' : ''}RSS before feed ${(rssBefore / 1024).toFixed(0)} MiB; load ${loadBefore.toFixed(1)}`;
    return { ms: tDone - t0, hwmKiB: mem.hwm, extra };
  } finally {
    ctl?.close();
    await lab.cleanup();
    if (kind === 'kernel') await settleKernel();
  }
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function bundleTarget(dir: string): Promise<{ cmd: string; args: string[] }> {
  const entry = join(ROOT, 'scripts/bench-bgp-target.ts');
  const out = join(dir, 'bench-bgp-target.mjs');
  const esbuild = await import('esbuild');
  await esbuild.build({
    entryPoints: [entry],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'error',
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  return { cmd: process.execPath, args: [out] };
}

const mib = (kib: number): string => `${(kib / 1024).toFixed(0)} MiB`;
const secs = (ms: number): string => `${(ms / 1000).toFixed(3)} s`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ingest: { type: 'string', default: '1000000' },
      reflect: { type: 'string', default: '100000' },
      clients: { type: 'string', default: '10' },
      kernel: { type: 'string', default: '100000,1000000' },
      only: { type: 'string', default: 'ingest,reflect' },
      dut: { type: 'string', default: 'bird,routecat' },
    },
  });
  const ingestN = Number(values.ingest);
  const reflectN = Number(values.reflect);
  const clients = Number(values.clients);
  const only = new Set(values.only.split(','));
  for (const [k, v, max] of [['--ingest', ingestN, FEED_MAX], ['--reflect', reflectN, FEED_MAX], ['--clients', clients, 200]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > max) throw new Error(`${k} ${v}: an integer 1..${max}`);
  }
  const kernelNs = values.kernel.split(',').map(Number);
  for (const k of kernelNs) if (!Number.isInteger(k) || k < 1 || k > FEED_MAX) throw new Error(`--kernel ${k}: integers 1..${FEED_MAX}, comma separated`);
  for (const o of only) if (o !== 'ingest' && o !== 'reflect' && o !== 'kernel') throw new Error(`--only '${o}': ingest, reflect and/or kernel`);
  const duts = new Set(values.dut.split(','));
  for (const d of duts) if (d !== 'bird' && d !== 'routecat') throw new Error(`--dut '${d}': bird and/or routecat`);
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const v = spawnSync('bird', ['--version'], { encoding: 'utf8' });
  if (v.status !== 0) throw new Error(`bird (Debian bird2) is not runnable: ${v.error?.message ?? v.stderr}`);
  const birdVersion = `${v.stdout}${v.stderr}`.trim();
  await sweepStaleNamespaces('rcbb');
  await sweepStaleNamespaces('rcbk');

  const dir = mkdtempSync(join(tmpdir(), 'rcbb-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const b: Bench = { dir, target: duts.has('routecat') ? await bundleTarget(dir) : { cmd: '', args: [] } };
  console.log(`routecat BGP bench: node ${process.version}, ${birdVersion.replace(/^BIRD version/, 'BIRD')}, ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores; figures from one run each, BIRD first`);

  const row = (name: string, r: CaseResult): string => `  ${name.padEnd(14)} ${secs(r.ms).padStart(10)}  ${mib(r.hwmKiB).padStart(9)}   (${r.extra})`;
  const compare = async (kind: CaseKind, n: number, target: string): Promise<void> => {
    const got: Partial<Record<'bird' | 'routecat', CaseResult>> = {};
    for (const [dut, name] of [['bird', 'BIRD'], ['routecat', 'routecat']] as const) {
      if (!duts.has(dut)) continue;
      got[dut] = await runCase(b, kind, dut, n, clients);
      console.log(row(name, got[dut]));
    }
    if (got.bird && got.routecat) {
      const t = `${(got.routecat.ms / got.bird.ms).toFixed(1)}x`;
      const m = `${(got.routecat.hwmKiB / got.bird.hwmKiB).toFixed(1)}x`;
      console.log(`  routecat/BIRD  ${t.padStart(10)}  ${m.padStart(9)}   ${target}`);
      const what = kind === 'ingest' ? `ingest ${n} /32 -> Loc-RIB` : kind === 'reflect' ? `reflect ${n} /32 to ${clients} clients` : `${n} /32 from BGP into the kernel`;
      const referenceName = birdVersion.replace(/^BIRD version/, 'BIRD').split('\n')[0]!;
      recordFigures([
        { suite: 'bgp', metric: `${what}: time`, routecat: got.routecat.ms / 1000, reference: got.bird.ms / 1000, referenceName, unit: 's', better: 'lower' },
        { suite: 'bgp', metric: `${what}: peak RSS`, routecat: got.routecat.hwmKiB / 1024, reference: got.bird.hwmKiB / 1024, referenceName, unit: 'MB', better: 'lower' },
      ]);
    }
  };
  if (only.has('ingest')) {
    console.log(`\ningest: ${ingestN} IPv4 /32 from one iBGP peer -> Loc-RIB          time   peak RSS`);
    await compare('ingest', ingestN, '(issue target: within 5x time, 3x memory)');
  }
  if (only.has('reflect')) {
    console.log(`\nreflection: ${reflectN} /32 from one client -> RR -> ${clients} clients    time   peak RSS`);
    await compare('reflect', reflectN, '(time: first UPDATE sent -> last client has all)');
  }
  if (only.has('kernel')) {
    for (const n of kernelNs) {
      console.log(`\nkernel: ${n} IPv4 /32 from one iBGP peer -> main table      time   peak RSS`);
      await compare('kernel', n, '(time: first UPDATE sent -> kernel holds all; issue reference: BIRD ~2.7 s for 1M on a quiet host)');
    }
  }
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  const roleAt = process.argv.indexOf('--role');
  if (roleAt >= 0 && process.argv[roleAt + 1] === 'peers') {
    peersMain(JSON.parse(process.argv[roleAt + 2] ?? '{}') as PeersConfig).catch((err: unknown) => {
      emit({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      process.exit(1);
    });
  } else {
    main().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`bench-bgp: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        process.exit(1);
      },
    );
  }
}
