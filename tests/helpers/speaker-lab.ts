/**
 * BGP speaker lab with BIRD 2, for tests/e2e/bgp-speaker-bird.test.ts.
 *
 * As a library: SpeakerLab builds a switch namespace with a bridge and one namespace per node
 * (`rcspk-<pid>-<n>-<name>`, via tests/helpers/netns.ts), each node joined to the bridge by a veth
 * and addressed 10.201.0.<host>/24 + fd00:201::<host>/64. On the nodes it runs BIRD (`bird -f`,
 * own config and control socket), routecat BgpSpeakers (this file as a child program) and a raw
 * BGP peer (this file too). cleanup() kills the processes and deletes the namespaces.
 *
 * As a program, inside a namespace:
 *   speaker '<json SpeakerChildConfig>': a BgpSpeaker; prints {type:'listening'}, {type:'fib',
 *     changes} per onFib batch and {type:'status', status} every 250 ms. SIGTERM: stop, exit.
 *   raw '<json RawChildConfig>': a hand-driven BGP peer (codec only, no session): connects, does
 *     OPEN/KEEPALIVE, prints {type:'established'}; each SIGUSR1 sends the next UPDATE of
 *     `steps` ('good', 'bad-origin', 'bad-length'), printing {type:'sent', step}; prints every
 *     message it receives ({type:'notification', code, subcode}, {type:'update'}...).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createLab, sweepStaleNamespaces, type Lab, type LabProcess } from './netns.ts';
import { waitUntil } from './wait.ts';
export { waitUntil };
import { BgpSpeaker } from '../../src/bgp/speaker/speaker.ts';
import type { FibChange, SpeakerConfig, SpeakerPeerConfig, SpeakerStatus } from '../../src/bgp/speaker-api.ts';
import { Framer, decodeMessage, encodeMessage, packUpdates } from '../../src/bgp/codec/index.ts';
import type { CodecOptions } from '../../src/bgp/types.ts';
import { setLogLevel } from '../../src/log.ts';

export const v4 = (host: number): string => `10.201.0.${host}`;
export const v6 = (host: number): string => `fd00:201::${host}`;

export interface SpeakerChildConfig {
  readonly config: SpeakerConfig;
  readonly peers: readonly SpeakerPeerConfig[];
  readonly local: readonly string[];
}

export type RawStep = 'good' | 'bad-origin' | 'bad-length';

export interface RawChildConfig {
  readonly localAddress: string;
  readonly peerAddress: string;
  readonly asn: number;
  readonly routerId: string;
  readonly prefixes: readonly string[];
  readonly steps: readonly RawStep[];
}

export interface ChildLine {
  readonly type: string;
  readonly [k: string]: unknown;
}

const SELF = fileURLToPath(import.meta.url);

/** JSON lines a child printed. */
export function jsonLines(p: LabProcess): ChildLine[] {
  const out: ChildLine[] = [];
  for (const l of p.output().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as ChildLine);
    } catch {
      // partial line
    }
  }
  return out;
}

/** A speaker child's FIB (replayed from its fib lines) and latest status. */
export function speakerFib(p: LabProcess): Map<string, readonly string[]> {
  const fib = new Map<string, readonly string[]>();
  for (const l of jsonLines(p)) {
    if (l.type !== 'fib') continue;
    for (const c of l.changes as FibChange[]) {
      if (c.nextHops.length === 0) fib.delete(c.prefix);
      else fib.set(c.prefix, c.nextHops);
    }
  }
  return fib;
}

export function speakerStatus(p: LabProcess): SpeakerStatus | undefined {
  const s = jsonLines(p).filter((l) => l.type === 'status');
  return s[s.length - 1]?.status as SpeakerStatus | undefined;
}

export class SpeakerLab {
  readonly lab: Lab;
  readonly #dir: string;
  #sw = '';
  readonly nodes = new Map<number, string>();

  constructor() {
    this.lab = createLab('rcspk');
    this.#dir = mkdtempSync(join(tmpdir(), 'rcspk-'));
  }

  /** The switch and one namespace per host number (10.201.0.<host>). */
  async setup(hosts: readonly number[]): Promise<void> {
    await sweepStaleNamespaces('rcspk');
    this.#sw = await this.lab.addNs('sw');
    await this.lab.sh(this.#sw, 'ip link add br0 type bridge && ip link set br0 up');
    for (const h of hosts) {
      const ns = await this.lab.addNs(`h${h}`);
      this.nodes.set(h, ns);
      await this.lab.veth(ns, 'eth0', this.#sw, `p${h}`);
      await this.lab.sh(this.#sw, `ip link set p${h} master br0 && ip link set p${h} up`);
      await this.lab.sh(
        ns,
        [
          'sysctl -qw net.ipv6.conf.all.accept_dad=0',
          'sysctl -qw net.ipv6.conf.eth0.accept_dad=0',
          `ip addr add ${v4(h)}/24 dev eth0`,
          `ip -6 addr add ${v6(h)}/64 dev eth0 nodad`,
          'ip link set eth0 up',
        ].join(' && '),
      );
    }
    const [first, ...rest] = hosts;
    for (const h of rest) {
      await waitUntil(`ping ${v4(h)}`, async () => (await this.lab.exec(this.ns(first!), 'ping', ['-c', '1', '-W', '1', v4(h)], { timeoutMs: 3_000 })).code === 0, 10_000);
    }
  }

  ns(host: number): string {
    const ns = this.nodes.get(host);
    if (!ns) throw new Error(`no node ${host}`);
    return ns;
  }

  sock(host: number): string {
    return join(this.#dir, `bird-${host}.ctl`);
  }

  async startBird(host: number, conf: string): Promise<LabProcess> {
    const file = join(this.#dir, `bird-${host}.conf`);
    writeFileSync(file, conf);
    const check = await this.lab.exec(this.ns(host), 'bird', ['-p', '-c', file]);
    if (check.code !== 0) throw new Error(`bird.conf does not parse: ${check.stderr}${check.stdout}\n${conf}`);
    const p = this.lab.spawn(this.ns(host), 'bird', ['-f', '-c', file, '-s', this.sock(host), '-P', join(this.#dir, `bird-${host}.pid`)]);
    await waitUntil('birdc answers', async () => (await this.birdc(host, 'show status')).includes('Daemon is up'), 10_000);
    return p;
  }

  async birdc(host: number, cmd: string): Promise<string> {
    const r = await this.lab.exec(this.ns(host), 'birdc', ['-s', this.sock(host), ...cmd.split(' ')], { timeoutMs: 5_000 });
    return r.code === 0 ? r.stdout : '';
  }

  /** The `show protocols` line of protocol `name` in BIRD on `host`. */
  async birdProtocol(host: number, name: string): Promise<string> {
    const out = await this.birdc(host, `show protocols ${name}`);
    return out.split('\n').find((l) => l.startsWith(`${name} `)) ?? '';
  }

  async startSpeaker(host: number, c: SpeakerChildConfig): Promise<LabProcess> {
    const p = this.lab.spawn(this.ns(host), process.execPath, ['--import', 'tsx', SELF, 'speaker', JSON.stringify(c)]);
    await p.waitFor(/"listening"/, 20_000);
    return p;
  }

  startRaw(host: number, c: RawChildConfig): LabProcess {
    return this.lab.spawn(this.ns(host), process.execPath, ['--import', 'tsx', SELF, 'raw', JSON.stringify(c)]);
  }

  async cleanup(): Promise<void> {
    try {
      await this.lab.cleanup();
    } finally {
      rmSync(this.#dir, { recursive: true, force: true });
    }
  }
}

/** bird.conf for an iBGP node: statics plus one `bgp` protocol per neighbour. */
export function birdConf(o: {
  host: number;
  asn: number;
  static4?: readonly string[];
  neighbours: ReadonlyArray<{ name: string; address: string; asn: number; rrClient?: boolean }>;
  clusterId?: string;
}): string {
  const parts = ['log stderr all;', `router id ${v4(o.host)};`, 'protocol device { scan time 1; }'];
  if (o.static4 && o.static4.length > 0) parts.push(`protocol static st4 {\n  ipv4;\n${o.static4.map((p) => `  route ${p} blackhole;`).join('\n')}\n}`);
  for (const n of o.neighbours) {
    parts.push(`protocol bgp ${n.name} {
  local ${v4(o.host)} as ${o.asn};
  neighbor ${n.address} as ${n.asn};
  hold time 30;
  connect retry time 1;
  connect delay time 1;
  error wait time 1, 5;
  direct;${n.rrClient ? `\n  rr client;\n  rr cluster id ${o.clusterId ?? v4(o.host)};` : ''}
  ipv4 { import all; export all; gateway direct; };
  ipv6 { import all; export all; gateway direct; };
}`);
  }
  return parts.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Child programs
// ---------------------------------------------------------------------------------------------

function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function speakerMain(c: SpeakerChildConfig): Promise<void> {
  setLogLevel((process.env.ROUTECAT_LOG_LEVEL as 'debug' | undefined) ?? 'warn');
  const s = new BgpSpeaker(c.config);
  s.onFib((changes) => print({ type: 'fib', changes }));
  await s.start();
  s.setPeers(c.peers);
  s.setLocalRoutes(c.local);
  s.initialSyncDone();
  print({ type: 'listening' });
  const t = setInterval(() => print({ type: 'status', status: s.status() }), 250);
  process.once('SIGTERM', () => {
    clearInterval(t);
    void s.stop('routecat test done').finally(() => process.exit(0));
  });
}

async function rawMain(c: RawChildConfig): Promise<void> {
  const opts: CodecOptions = { as4: true, ibgp: true };
  const sock = connect({ host: c.peerAddress, port: 179, localAddress: c.localAddress });
  sock.on('error', (err) => print({ type: 'error', message: err.message }));
  sock.on('close', () => {
    print({ type: 'closed' });
    setTimeout(() => process.exit(0), 100);
  });
  await new Promise<void>((resolve) => sock.once('connect', resolve));
  sock.write(
    encodeMessage(
      { type: 'open', version: 4, myAs: c.asn, holdTime: 90, bgpId: c.routerId, capabilities: { multiprotocol: ['ipv4-unicast'], as4: c.asn, routeRefresh: true } },
      opts,
    ),
  );
  const framer = new Framer();
  let established = false;
  sock.on('data', (chunk: Buffer) => {
    for (const f of framer.push(chunk)) {
      const m = decodeMessage(f, opts);
      if (m.type === 'open') sock.write(encodeMessage({ type: 'keepalive' }, opts));
      else if (m.type === 'keepalive') {
        if (!established) print({ type: 'established' });
        established = true;
      } else if (m.type === 'notification') print({ type: 'notification', code: m.code, subcode: m.subcode });
      else if (m.type === 'update') print({ type: 'update', nlri: m.nlri.map((n) => n.prefix), withdrawn: m.withdrawn.map((n) => n.prefix) });
    }
  });
  const keepalive = setInterval(() => sock.writable && sock.write(encodeMessage({ type: 'keepalive' }, opts)), 20_000);
  keepalive.unref();
  const good = (prefixes: readonly string[]): Buffer =>
    packUpdates({ afiSafi: 'ipv4-unicast', attributes: { origin: 0, asPath: [], localPref: 100 }, nextHop: c.localAddress, nlri: prefixes.map((prefix) => ({ prefix })), withdrawn: [] }, opts)[0]!;
  let next = 0;
  process.on('SIGUSR1', () => {
    const step = c.steps[next++];
    if (step === undefined) return;
    let buf: Buffer;
    if (step === 'good') buf = good(c.prefixes);
    else if (step === 'bad-origin') {
      // ORIGIN is the first attribute: flags 0x40, code 1, length 1, value at offset 26.
      buf = Buffer.from(good(c.prefixes.slice(0, 1)));
      if (buf[23] !== 0x40 || buf[24] !== 1 || buf[25] !== 1) throw new Error('ORIGIN is not where expected');
      buf[26] = 7; // not IGP/EGP/INCOMPLETE: RFC 7606 treat-as-withdraw
    } else {
      // Total Path Attribute Length past the end of the message: the NLRI cannot be located.
      buf = Buffer.from(good(c.prefixes.slice(0, 1)));
      buf.writeUInt16BE(buf.length, 21);
    }
    sock.write(buf);
    print({ type: 'sent', step });
  });
  process.once('SIGTERM', () => {
    sock.destroy();
    process.exit(0);
  });
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const [mode, json] = process.argv.slice(2);
  const run = mode === 'raw' ? rawMain(JSON.parse(json ?? '{}') as RawChildConfig) : speakerMain(JSON.parse(json ?? '{}') as SpeakerChildConfig);
  run.catch((err: unknown) => {
    print({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exit(1);
  });
}
