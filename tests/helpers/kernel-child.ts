/**
 * Runs routecat's kernel side (LinuxKernel + IfaceReconciler + RouteReconciler, optionally the
 * KernelMonitor) in the CURRENT network namespace, for e2e tests that start it with
 * `ip netns exec <ns> node --import tsx tests/helpers/kernel-child.ts '<json>'`. Never run it in
 * the machine's own namespace.
 *
 * Input (argv[2], or all of stdin when absent): {
 *   endpoints: [{ iface, ipv4Nets?, ipv6Nets?, name?, type? }],
 *   inSync?: boolean (default true), prefix?: string (default 'cali'),
 *   applies?: number (one-shot mode: apply this many times, markDirty before each one after the 2nd),
 *   watch?: boolean (keep running: monitor + re-apply on events and on stdin lines)
 * }
 * Output: JSON lines on stdout — {type:'applied', n, reason, ids, routes, ifaces}, {type:'ready', monitorPid},
 * {type:'event', event} for monitor events, {type:'error', message}.
 * Watch-mode stdin lines: {endpoints, inSync?} (new desired state), {cmd:'resync'}, {cmd:'apply'}, each
 * with an optional numeric `id` that the first apply starting after it lists in `ids`.
 * It exits when stdin closes (watch mode) or after the applies (one-shot).
 */
import { readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { LinuxKernel } from '../../src/agent/kernel/linux-kernel.ts';
import { KernelMonitor, eventNeedsResync } from '../../src/agent/kernel/monitor.ts';
import { ROUTE_PROTO } from '../../src/agent/kernel/kernel.ts';
import { RouteReconciler } from '../../src/agent/route-reconciler.ts';
import { IfaceReconciler } from '../../src/agent/iface-reconciler.ts';
import type { LocalEndpoint } from '../../src/agent/model.ts';
import { errorMessage } from '../../src/errors.ts';
import { setLogLevel } from '../../src/log.ts';

interface EndpointArg {
  iface: string;
  ipv4Nets?: string[];
  ipv6Nets?: string[];
  name?: string;
  type?: 'workload' | 'host';
}

interface ChildArgs {
  endpoints?: EndpointArg[];
  inSync?: boolean;
  prefix?: string;
  applies?: number;
  watch?: boolean;
  cmd?: 'resync' | 'apply';
  /** Request id (watch-mode stdin): reported in `ids` of the apply that covered it. */
  id?: number;
}

setLogLevel((process.env.ROUTECAT_LOG_LEVEL as 'debug' | undefined) ?? 'warn');

function toEndpoints(args: EndpointArg[]): LocalEndpoint[] {
  return args.map((a, i) => {
    const name = a.name ?? `w${i}`;
    return {
      id: `wep/test/${name}`,
      type: a.type ?? 'workload',
      name,
      namespace: 'test',
      iface: a.iface,
      ipv4Nets: a.ipv4Nets ?? [],
      ipv6Nets: a.ipv6Nets ?? [],
      allowSpoofedSourcePrefixes: [],
      labels: {},
      ingress: { tiers: [], profiles: [] },
      egress: { tiers: [], profiles: [] },
    };
  });
}

function tryReadlink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function out(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function readAllStdin(): Promise<string> {
  let s = '';
  for await (const chunk of process.stdin) s += String(chunk);
  return s;
}

async function main(): Promise<void> {
  // Refuse to program the namespace the tests run in (the machine's own): the lab passes its
  // namespace in ROUTECAT_OUTER_NETNS; without it, PID 1's namespace (when readable) stands in.
  const outer = process.env.ROUTECAT_OUTER_NETNS ?? tryReadlink('/proc/1/ns/net');
  if (outer === undefined || readlinkSync('/proc/self/ns/net') === outer) {
    throw new Error('kernel-child runs only inside a test network namespace (ip netns exec <ns> ...), started by tests/helpers/kernel-lab.ts');
  }
  const args = JSON.parse(process.argv[2] ?? (await readAllStdin())) as ChildArgs;
  const kernel = new LinuxKernel();
  const ifaces = new IfaceReconciler({ kernel, ...(args.prefix ? { prefix: args.prefix } : {}) });
  const routes = new RouteReconciler({ kernel });
  let inSync = args.inSync ?? true;
  const setDesired = (eps: EndpointArg[]) => {
    const list = toEndpoints(eps);
    ifaces.setDesired(list);
    routes.setDesired(list);
  };
  setDesired(args.endpoints ?? []);
  let n = 0;
  /** Ids of stdin requests not yet covered by an apply. */
  let pendingIds: number[] = [];
  const applyOnce = async (reason: string) => {
    const ids = pendingIds;
    pendingIds = [];
    // Interfaces first (proxy ARP, forwarding), then routes, as the agent does.
    const i = await ifaces.apply({ inSync });
    const r = await routes.apply({ inSync });
    out({ type: 'applied', n: ++n, reason, ids, routes: r, ifaces: i });
  };

  if (!args.watch) {
    const count = args.applies ?? 1;
    for (let k = 0; k < count; k++) {
      if (k >= 2) {
        ifaces.markDirty();
        routes.markDirty();
      }
      await applyOnce(k === 0 ? 'initial' : k === 1 ? 'again (clean)' : 'again (dirty)');
    }
    await kernel.close();
    return;
  }

  // Watch mode: single-flight apply, re-run when something happened meanwhile.
  let running = false;
  let again: string | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (reason: string, delayMs = 20) => {
    again = again ?? reason;
    if (running || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void loop();
    }, delayMs);
  };
  const loop = async () => {
    running = true;
    while (again !== undefined) {
      const reason = again;
      again = undefined;
      try {
        await applyOnce(reason);
      } catch (err) {
        out({ type: 'error', message: errorMessage(err) });
      }
    }
    running = false;
  };

  const monitor = new KernelMonitor({ backoff: { initialMs: 100, maxMs: 2_000 } });
  monitor.onEvent((e) => {
    if (e.type !== 'address') out({ type: 'event', event: e });
    if (e.type === 'route') {
      // Removal of a route of ours: only a route our view still has means drift (not our own delete).
      if (eventNeedsResync(e, ROUTE_PROTO) && routes.routeRemoved(e.dst, e.dev, e.metric)) schedule(`monitor: route removed`);
    } else if (eventNeedsResync(e, ROUTE_PROTO)) {
      ifaces.markDirty();
      routes.markDirty();
      schedule(`monitor: ${e.type}${'change' in e ? ` ${e.change}` : ''}`);
    }
  });
  monitor.start();
  await applyOnce('initial');
  out({ type: 'ready', monitorPid: monitor.pid });

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    try {
      const msg = JSON.parse(line) as ChildArgs;
      if (msg.inSync !== undefined) inSync = msg.inSync;
      if (msg.endpoints) setDesired(msg.endpoints);
      if (typeof msg.id === 'number') pendingIds.push(msg.id);
      if (msg.cmd === 'resync') {
        ifaces.markDirty();
        routes.markDirty();
      }
      schedule(msg.cmd === 'resync' ? 'resync' : msg.endpoints ? 'desired changed' : 'requested', 0);
    } catch (err) {
      out({ type: 'error', message: `bad input line: ${errorMessage(err)}` });
    }
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    if (timer) clearTimeout(timer);
    rl.close();
    await monitor.stop();
    await kernel.close();
    out({ type: 'stopped' });
  };
  rl.on('close', () => void stop());
  process.on('SIGTERM', () => void stop().then(() => process.exit(0)));
}

main().catch((err) => {
  out({ type: 'error', message: errorMessage(err) });
  process.exitCode = 1;
});
