/**
 * BGP interop lab with BIRD 2 (Debian's bird2), for tests/e2e/bgp-bird.test.ts.
 *
 * As a library: BgpLab builds two network namespaces (`rcbgp-<pid>-<n>-rc` and `...-bird`, via
 * tests/helpers/netns.ts) joined by a veth (10.200.0.1/24 + fd00:200::1/64 on the routecat side,
 * 10.200.0.2/24 + fd00:200::2/64 on BIRD's), runs `bird -f -c <conf> -s <sock>` in one and this file
 * as a child (a routecat BgpSession printing JSON lines) in the other, and talks to BIRD with
 * `birdc -s <sock>`. Everything runs through `ip netns exec`; cleanup() kills the processes and
 * deletes the namespaces (also on exit/SIGINT/SIGTERM, via netns.ts).
 *
 * As a program (`ip netns exec <ns> node --import tsx tests/helpers/bird.ts '<json ChildConfig>'`):
 * listens on <localAddress>:179 and hands connections from the peer to the session, starts the
 * session, announces `announce4`/`announce6` (and End-of-RIB) once Established, and prints
 * {type:'listening'}, {type:'state'}, {type:'established'}, {type:'update'}, {type:'down'} lines.
 * SIGTERM: stop with a shutdown communication and exit.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createLab, labSupport, sweepStaleNamespaces, type Lab, type LabProcess } from './netns.ts';
import { waitUntil } from './wait.ts';
import { BgpSession } from '../../src/bgp/session/session.ts';
import { packUpdates, endOfRib } from '../../src/bgp/codec/index.ts';
import type { AfiSafi, UpdateMessage } from '../../src/bgp/types.ts';
import { setLogLevel } from '../../src/log.ts';

export const RC_V4 = '10.200.0.1';
export const BIRD_V4 = '10.200.0.2';
export const RC_V6 = 'fd00:200::1';
export const BIRD_V6 = 'fd00:200::2';

export interface ChildConfig {
  readonly localAs: number;
  readonly peerAs: number;
  readonly localId: string;
  readonly localAddress: string;
  readonly peerAddress: string;
  readonly passive: boolean;
  readonly holdTime?: number;
  readonly families: readonly AfiSafi[];
  readonly announce4?: { readonly prefixes: readonly string[]; readonly nextHop: string };
  readonly announce6?: { readonly prefixes: readonly string[]; readonly nextHop: string };
  readonly shutdownText?: string;
}

export interface BirdConfig {
  readonly routerId: string;
  readonly localAs: number;
  readonly peerAs: number;
  readonly localAddress: string;
  readonly peerAddress: string;
  readonly static4: readonly string[];
  readonly static6?: readonly string[];
  readonly holdTime?: number;
  readonly passive?: boolean;
}

/** bird.conf text: device + static routes + one BGP protocol named `rc`. */
export function birdConf(c: BirdConfig): string {
  const ibgp = c.localAs === c.peerAs;
  const chan = (af: 'ipv4' | 'ipv6') => `  ${af} {
    import all;
    export all;
    next hop self;${ibgp ? '\n    gateway direct;' : ''}
  };`;
  return [
    'log stderr all;',
    `router id ${c.routerId};`,
    'protocol device { scan time 1; }',
    `protocol static st4 {\n  ipv4;\n${c.static4.map((p) => `  route ${p} blackhole;`).join('\n')}\n}`,
    c.static6 && c.static6.length > 0 ? `protocol static st6 {\n  ipv6;\n${c.static6.map((p) => `  route ${p} blackhole;`).join('\n')}\n}` : '',
    `protocol bgp rc {
  local ${c.localAddress} as ${c.localAs};
  neighbor ${c.peerAddress} as ${c.peerAs};
  hold time ${c.holdTime ?? 30};
  connect retry time 1;
  connect delay time 1;
  error wait time 1, 5;${ibgp ? '\n  direct;' : ''}${c.passive ? '\n  passive on;' : ''}
${chan('ipv4')}${c.static6 ? `\n${chan('ipv6')}` : ''}
}`,
    '',
  ].join('\n');
}

export interface ChildLine {
  readonly type: string;
  readonly [k: string]: unknown;
}

const SELF = fileURLToPath(import.meta.url);


export class BgpLab {
  readonly lab: Lab;
  rcNs = '';
  birdNs = '';
  readonly #dir: string;
  #bird?: LabProcess;
  #child?: LabProcess;

  constructor() {
    this.lab = createLab('rcbgp');
    this.#dir = mkdtempSync(join(tmpdir(), 'rcbgp-'));
  }

  get sock(): string {
    return join(this.#dir, 'bird.ctl');
  }

  /** Two namespaces joined by a veth, addressed (IPv6 without DAD). */
  async setup(): Promise<void> {
    await sweepStaleNamespaces('rcbgp');
    this.rcNs = await this.lab.addNs('rc');
    this.birdNs = await this.lab.addNs('bird');
    await this.lab.veth(this.rcNs, 'rc0', this.birdNs, 'bird0');
    for (const [ns, ifc, v4, v6] of [
      [this.rcNs, 'rc0', RC_V4, RC_V6],
      [this.birdNs, 'bird0', BIRD_V4, BIRD_V6],
    ] as const) {
      await this.lab.sh(
        ns,
        [
          'sysctl -qw net.ipv6.conf.all.accept_dad=0',
          `sysctl -qw net.ipv6.conf.${ifc}.accept_dad=0`,
          `ip addr add ${v4}/24 dev ${ifc}`,
          `ip -6 addr add ${v6}/64 dev ${ifc} nodad`,
          `ip link set ${ifc} up`,
        ].join(' && '),
      );
    }
    await waitUntil('ping over the veth', async () => (await this.lab.exec(this.rcNs, 'ping', ['-c', '1', '-W', '1', BIRD_V4], { timeoutMs: 3_000 })).code === 0, 10_000);
  }

  async startBird(c: BirdConfig): Promise<void> {
    const conf = join(this.#dir, 'bird.conf');
    writeFileSync(conf, birdConf(c));
    const check = await this.lab.exec(this.birdNs, 'bird', ['-p', '-c', conf]);
    if (check.code !== 0) throw new Error(`bird.conf does not parse: ${check.stderr}${check.stdout}\n${birdConf(c)}`);
    this.#bird = this.lab.spawn(this.birdNs, 'bird', ['-f', '-c', conf, '-s', this.sock, '-P', join(this.#dir, 'bird.pid')]);
    await waitUntil('birdc answers', async () => (await this.birdc('show status')).includes('Daemon is up'), 10_000);
  }

  /** `birdc -s <sock> <cmd...>` output ('' on failure). */
  async birdc(cmd: string): Promise<string> {
    const r = await this.lab.exec(this.birdNs, 'birdc', ['-s', this.sock, ...cmd.split(' ')], { timeoutMs: 5_000 });
    return r.code === 0 ? r.stdout : '';
  }

  async birdProtocolState(): Promise<string> {
    const out = await this.birdc('show protocols rc');
    const line = out.split('\n').find((l) => /^rc\s/.test(l));
    return line ?? '';
  }

  startChild(c: ChildConfig): LabProcess {
    this.#child = this.lab.spawn(this.rcNs, process.execPath, ['--import', 'tsx', SELF, JSON.stringify(c)]);
    return this.#child;
  }

  /** The child's JSON lines so far. */
  lines(): ChildLine[] {
    const out: ChildLine[] = [];
    for (const l of (this.#child?.output() ?? '').split('\n')) {
      if (!l.startsWith('{')) continue;
      try {
        out.push(JSON.parse(l) as ChildLine);
      } catch {
        // a partial line
      }
    }
    return out;
  }

  /** Prefixes the child has been announced and not withdrawn since. */
  received(): Set<string> {
    const rib = new Set<string>();
    for (const l of this.lines()) {
      if (l.type !== 'update') continue;
      for (const p of l.withdrawn as string[]) rib.delete(p);
      for (const p of l.nlri as string[]) rib.add(p);
    }
    return rib;
  }

  async stopChild(): Promise<void> {
    const c = this.#child;
    if (!c) return;
    if (c.child.exitCode === null && c.child.signalCode === null) {
      c.child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5_000);
        c.child.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await c.kill();
  }

  waitUntil = waitUntil;

  async cleanup(): Promise<void> {
    try {
      await this.lab.cleanup();
    } finally {
      rmSync(this.#dir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The child program
// ---------------------------------------------------------------------------------------------

function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function summarize(u: UpdateMessage): Record<string, unknown> {
  return {
    type: 'update',
    nlri: [...u.nlri.map((n) => n.prefix), ...(u.mpReach?.nlri.map((n) => n.prefix) ?? [])],
    withdrawn: [...u.withdrawn.map((n) => n.prefix), ...(u.mpUnreach?.withdrawn.map((n) => n.prefix) ?? [])],
    nextHop: u.mpReach?.nextHop ?? u.attributes.nextHop,
    asPath: u.attributes.asPath,
    ...(u.handling ? { handling: u.handling, errors: u.errors } : {}),
  };
}

async function childMain(c: ChildConfig): Promise<void> {
  setLogLevel((process.env.ROUTECAT_LOG_LEVEL as 'debug' | undefined) ?? 'warn');
  const session = new BgpSession({
    localAs: c.localAs,
    peerAs: c.peerAs,
    localId: c.localId,
    peerAddress: c.peerAddress,
    localAddress: c.localAddress,
    passive: c.passive,
    holdTime: c.holdTime ?? 30,
    connectRetrySec: 1,
    capabilities: { multiprotocol: [...c.families], routeRefresh: true },
  });
  const server = createServer((sock) => {
    if (sock.remoteAddress === c.peerAddress || sock.remoteAddress === `::ffff:${c.peerAddress}`) session.acceptSocket(sock);
    else sock.destroy();
  });
  server.on('error', (err) => print({ type: 'error', message: err.message }));
  await new Promise<void>((resolve) => server.listen(179, c.localAddress, resolve));
  print({ type: 'listening' });

  session.on('state', (state, previous) => print({ type: 'state', state, previous }));
  session.on('update', (u) => print(summarize(u)));
  session.on('down', (d) => print({ type: 'down', reason: d.reason, notification: d.notification ? { ...d.notification, data: [...d.notification.data] } : undefined }));
  session.on('established', (info) => {
    print({ type: 'established', peerId: info.peerId, peerAs: info.peerAs, holdTimeSec: info.holdTimeSec, direction: info.direction, families: [...info.negotiated.families] });
    const opts = session.encodeOptions!;
    const bufs: Buffer[] = [];
    // What an export policy would do: iBGP carries LOCAL_PREF and an empty path, eBGP prepends our AS.
    const ibgp = c.localAs === c.peerAs;
    const attributes = ibgp
      ? { origin: 0 as const, asPath: [], localPref: 100 }
      : { origin: 0 as const, asPath: [{ type: 'sequence' as const, asns: [c.localAs] }] };
    if (c.announce4 && info.negotiated.families.has('ipv4-unicast')) {
      bufs.push(...packUpdates({ afiSafi: 'ipv4-unicast', attributes, nextHop: c.announce4.nextHop, nlri: c.announce4.prefixes.map((prefix) => ({ prefix })), withdrawn: [] }, opts));
    }
    if (c.announce6 && info.negotiated.families.has('ipv6-unicast')) {
      bufs.push(...packUpdates({ afiSafi: 'ipv6-unicast', attributes, nextHop: c.announce6.nextHop, nlri: c.announce6.prefixes.map((prefix) => ({ prefix })), withdrawn: [] }, opts));
    }
    for (const f of info.negotiated.families) bufs.push(endOfRib(f, opts));
    session.send(bufs).then(
      () => print({ type: 'sent', messages: bufs.length }),
      (err: unknown) => print({ type: 'error', message: String(err) }),
    );
  });
  process.once('SIGTERM', () => {
    server.close();
    session.stop(c.shutdownText ?? 'routecat test shutting down').then(() => {
      print({ type: 'stopped', counters: session.counters });
      process.exit(0);
    });
  });
  session.start();
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  childMain(JSON.parse(process.argv[2] ?? '{}') as ChildConfig).catch((err: unknown) => {
    print({ type: 'error', message: err instanceof Error ? err.stack ?? err.message : String(err) });
    process.exit(1);
  });
}

/** Why a test needing namespaces and bird2 cannot run here (false: it can). */
export async function birdLabSkipReason(): Promise<string | false> {
  const support = await labSupport();
  if (!support.ok) return support.reason;
  try {
    execFileSync('bird', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'bird (bird2) is not installed';
  }
  return false;
}
