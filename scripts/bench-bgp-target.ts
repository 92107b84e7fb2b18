/**
 * DOC: The routecat side of scripts/bench-bgp.ts: one BgpSpeaker in its own network namespace,
 * listening on `listen`:179 for the configured iBGP peers (all passive; all route-reflector
 * clients when `clusterId` is set), reporting as JSON lines on stdout:
 *   {type:'listening'}                       started, accepting sessions
 *   {type:'complete', t, vmHwmKiB}           the Loc-RIB holds `n` IPv4 routes (t: hrtime ms)
 *   {type:'fib-complete', t}                 onFib has delivered `n` installed routes
 *   {type:'fib-applied', t, added, failed}   (with `fib`) BgpFib.apply has returned for all `n`
 * Completion is polled from status() every 2 ms. The bench bundles this file with esbuild and
 * runs it under plain node so that no TypeScript loader thread is part of the measured RSS.
 * Without `fib` it never touches the kernel's routes (onFib only counts); with `fib: true` it is
 * the node's BGP half: speaker.onFib -> BgpFib.apply (proto 193, main table of the namespace it
 * runs in), wired as src/agent/bgp-node.ts does.
 *
 *   node --import tsx scripts/bench-bgp-target.ts '{"n":1000,"listen":"10.201.0.1","peers":["10.201.0.10"]}'
 */
import { readFileSync } from 'node:fs';
import { BgpFib } from '../src/agent/kernel/fib.ts';
import { BgpSpeaker } from '../src/bgp/speaker/speaker.ts';
import type { FibChange, SpeakerPeerConfig } from '../src/bgp/speaker-api.ts';
import { setLogLevel } from '../src/log.ts';

interface TargetConfig {
  readonly n: number;
  readonly listen: string;
  readonly peers: readonly string[];
  readonly clusterId?: string;
  readonly holdTime?: number;
  /** Program the routes into the kernel with BgpFib (as `routecat node` does). */
  readonly fib?: boolean;
}

const emit = (line: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(line)}\n`);
const now = (): number => Number(process.hrtime.bigint()) / 1e6;

function vmHwmKiB(): number {
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN);
}

async function main(c: TargetConfig): Promise<void> {
  setLogLevel('warn');
  // Exit with the bench (we are reparented when it dies, even by SIGKILL).
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 500).unref();
  const speaker = new BgpSpeaker({
    asn: 64512,
    routerId: c.listen,
    ...(c.clusterId ? { clusterId: c.clusterId } : {}),
    listen: { addresses: [c.listen], port: 179 },
    nextHop: { ipv4: c.listen },
  });
  let installed = 0;
  let fibDone = false;
  const fib = c.fib ? new BgpFib() : undefined;
  await fib?.start();
  let added = 0;
  let failed = 0;
  let appliedDone = false;
  speaker.onFib((changes: readonly FibChange[]) => {
    for (const ch of changes) installed += ch.nextHops.length > 0 ? 1 : -1;
    if (!fibDone && installed >= c.n) {
      fibDone = true;
      emit({ type: 'fib-complete', t: now() });
    }
    // As BgpNode does: not awaited (BgpFib serializes its calls), a failure only logged.
    fib?.apply(changes).then(
      (r) => {
        added += r.added;
        failed += r.failed + r.rejected.length;
        if (!appliedDone && added + failed >= c.n) {
          appliedDone = true;
          emit({ type: 'fib-applied', t: now(), added, failed });
        }
      },
      (err: unknown) => emit({ type: 'error', message: `BgpFib.apply: ${err instanceof Error ? err.message : String(err)}` }),
    );
  });
  await speaker.start();
  const peers: SpeakerPeerConfig[] = c.peers.map((address) => ({
    id: address,
    address,
    asn: 64512,
    kind: c.clusterId ? 'rr-client' : 'global',
    passive: true,
    localAddress: c.listen,
    holdTimeSec: c.holdTime ?? 90,
    ...(c.clusterId ? { routeReflectorClient: true } : {}),
  }));
  speaker.setPeers(peers);
  speaker.setLocalRoutes([]);
  speaker.initialSyncDone();
  emit({ type: 'listening' });

  const poll = setInterval(() => {
    if (speaker.status().locRib['ipv4-unicast'] >= c.n) {
      const t = now();
      clearInterval(poll);
      emit({ type: 'complete', t, vmHwmKiB: vmHwmKiB() });
    }
  }, 2);
  process.once('SIGTERM', () => {
    clearInterval(poll);
    void speaker
      .stop('bench done')
      .then(() => fib?.close())
      .finally(() => process.exit(0));
  });
}

main(JSON.parse(process.argv[2] ?? '{}') as TargetConfig).catch((err: unknown) => {
  emit({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});
