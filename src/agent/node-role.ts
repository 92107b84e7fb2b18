/**
 * `routecat node`: the composition root of the host agent. Resolves configuration (with
 * FelixConfiguration from the datastore as a layer), registers this host's Node resource, and
 * wires syncer -> calculation -> kernel reconcilers, plus health, metrics, the control socket
 * and status reports; with BGP on, also syncer -> BgpNode -> BGP speaker -> kernel FIB, and the
 * local workload routes from each apply -> speaker, and this host's block affinities (a second
 * syncer) -> BgpNode for route aggregation and block blackholes. The one module that knows every part of the
 * node role.
 */
import { hostname as osHostname, networkInterfaces } from 'node:os';
import type { Server } from 'node:http';
import { VERSION } from '../version.ts';
import { errorMessage, NotFoundError } from '../errors.ts';
import { logger, setLogLevel, type LogLevel } from '../log.ts';
import { parseRoleArgs } from '../cli/role-options.ts';
import { loadConfig } from '../cli/options.ts';
import { etcdOptionsFromConfig } from '../cli/etcd-config.ts';
import type { RoleRunner } from '../cli/main.ts';
import { datastoreLayer, parseDuration, type ResolvedConfig } from '../config/resolve.ts';
import { connectEtcd, type Etcd3 } from '../datastore/etcd.ts';
import { RESOURCE_PREFIX } from '../datastore/keys.ts';
import { ResourceStore } from '../datastore/resource-store.ts';
import { WatcherSyncer } from '../datastore/syncer.ts';
import { IPAM_PREFIX } from '../ipam/keys.ts';
import { lookupKind } from '../model/kinds.ts';
import type { Resource } from '../model/resource.ts';
import { validateResource } from '../model/validate.ts';
import { NodeAgent } from './agent.ts';
import { Calculator } from './calculation.ts';
import { createAclDataplane } from './dataplane/acl.ts';
import { startHealthServer, closeServer } from './status/health.ts';
import { AgentMetrics } from './status/metrics.ts';
import { startControlServer } from './status/control.ts';
import { StatusReporter } from './status/reporter.ts';
import { createKernelParts } from './kernel-parts.ts';
import { BgpNode } from './bgp-node.ts';

const log = logger('node');

/** FelixConfiguration `default` then `node.<name>` (the more specific wins). */
async function felixConfigLayer(store: ResourceStore, name: string): Promise<Record<string, unknown>> {
  const kind = lookupKind('FelixConfiguration')!;
  let merged: Record<string, unknown> = {};
  for (const n of ['default', `node.${name}`]) {
    try {
      merged = { ...merged, ...((await store.get(kind, n)).spec ?? {}) };
    } catch (err) {
      if (!(err instanceof NotFoundError)) log.warn(`cannot read FelixConfiguration '${n}': ${errorMessage(err)}`);
    }
  }
  return merged;
}

function autodetectIPv4(): string | undefined {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.cidr ?? `${a.address}/32`;
  }
  return undefined;
}

function asCidr(ip: string | undefined, bits: number): string | undefined {
  if (!ip) return undefined;
  return ip.includes('/') ? ip : `${ip}/${bits}`;
}

/**
 * Creates or updates this host's Node resource, keeping fields other tools set. `bgpDefaults` are
 * spec.bgp fields set only when the Node has none yet (the reflector's routeReflectorClusterID).
 */
export async function registerNode(
  store: ResourceStore,
  name: string,
  ip: string | undefined,
  ip6: string | undefined,
  asNumber: number | undefined,
  bgpFields: { readonly set?: Record<string, unknown>; readonly defaults?: Record<string, unknown> } = {},
): Promise<void> {
  const kind = lookupKind('Node')!;
  for (let attempt = 0; ; attempt++) {
    let existing: Resource | undefined;
    try {
      existing = await store.get(kind, name);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    const spec = { ...(existing?.spec ?? {}) } as Record<string, unknown>;
    const bgp = { ...((spec.bgp as Record<string, unknown> | undefined) ?? {}) };
    if (ip) bgp.ipv4Address = ip;
    if (ip6) bgp.ipv6Address = ip6;
    if (asNumber !== undefined) bgp.asNumber = asNumber;
    for (const [k, v] of Object.entries(bgpFields.defaults ?? {})) if (bgp[k] === undefined) bgp[k] = v;
    Object.assign(bgp, bgpFields.set ?? {});
    if (Object.keys(bgp).length > 0) spec.bgp = bgp;
    const doc = validateResource({
      apiVersion: 'projectcalico.org/v3',
      kind: 'Node',
      metadata: { ...(existing?.metadata ?? {}), name },
      spec,
    });
    try {
      const { action } = await store.apply(doc);
      log.info(`Node '${name}' ${action}${ip ? ` (IPv4 ${ip})` : ''}`);
      return;
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

export async function retryUntil<T>(what: string, f: () => Promise<T>, stopped: () => boolean): Promise<T | undefined> {
  for (let delay = 200; !stopped(); delay = Math.min(delay * 2, 5_000)) {
    try {
      return await f();
    } catch (err) {
      log.warn(`${what} failed: ${errorMessage(err)}; retrying in ${delay} ms`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  return undefined;
}

/** iproute2's names for the well-known route protocols (rtnetlink.h RTPROT_*). */
const ROUTE_PROTOCOL_NAMES: Readonly<Record<string, number>> = { kernel: 2, boot: 3, static: 4, ra: 9, dhcp: 16 };

/** `--bgp-export-protocols static,4,dhcp` -> [4, 4, 16] deduplicated; a bad entry is an error naming it. */
export function parseRouteProtocols(items: readonly string[]): number[] {
  const out = new Set<number>();
  for (const raw of items) {
    const item = raw.trim().toLowerCase();
    if (item === '') continue;
    const n = ROUTE_PROTOCOL_NAMES[item] ?? (/^\d+$/.test(item) ? Number(item) : NaN);
    if (!Number.isInteger(n) || n < 1 || n > 255) {
      throw new Error(`bgpExportProtocols: '${raw}' is not a route protocol (a number 1-255 or one of ${Object.keys(ROUTE_PROTOCOL_NAMES).join(', ')})`);
    }
    if (n === 192 || n === 193) throw new Error(`bgpExportProtocols: ${n} is routecat's own protocol; its routes are advertised already or learned`);
    out.add(n);
  }
  return [...out];
}

export interface RunningNode {
  readonly agent: NodeAgent;
  /**
   * Stops the agent and the speaker; kernel state stays. `restarting` (SIGTERM: an upgrade or a
   * service restart) closes graceful-restart sessions without a NOTIFICATION so peers keep this
   * host's routes until it is back; otherwise every peer gets a Cease and withdraws them.
   */
  stop(opts?: { readonly restarting?: boolean }): Promise<void>;
}

export async function startNode(config: ResolvedConfig, client: Etcd3): Promise<RunningNode> {
  const v = config.values;
  const name = (v.nodename as string | undefined) || osHostname();
  const store = new ResourceStore(client);
  let stopped = false;
  const bgpOn = v.bgp !== false && v.networkingBackend !== 'none';
  const ip = asCidr((v.ip as string | undefined) ?? (bgpOn ? autodetectIPv4() : undefined), 32);
  await retryUntil('registering the Node resource', () => registerNode(store, name, ip, asCidr(v.ip6 as string | undefined, 128), v.asNumber as number | undefined), () => stopped);

  const metrics = new AgentMetrics();
  const prefix = String(v.interfacePrefix);
  const kernel = createKernelParts({ ifacePrefix: prefix });
  const toHost = String(v.defaultEndpointToHostAction);
  const endpointToHostAction = (toHost.charAt(0).toUpperCase() + toHost.slice(1)) as 'Drop' | 'Accept' | 'Return';
  const acl = createAclDataplane(v.dataplane as 'iptables' | 'nftables', { ifacePrefix: prefix, endpointToHostAction });
  const calc = new Calculator({ hostname: name });
  const problems: Array<{ key: string; reason: string }> = [];
  // BGP: the FIB starts first so that our routes from before a restart are seen before the agent
  // writes anything (that decides whether the speaker announces a graceful restart).
  let bgp: BgpNode | undefined;
  if (bgpOn) {
    const { BgpSpeaker } = await import('../bgp/speaker/speaker.ts');
    const { BgpFib } = await import('./kernel/fib.ts');
    bgp = new BgpNode({
      nodeName: name,
      createSpeaker: (c) => new BgpSpeaker(c),
      fib: new BgpFib(),
      originates: true,
      compute: explicitListenPort(config),
      resyncIntervalMs: parseDuration(String(v.routeRefreshInterval)),
      exportKernelProtocols: parseRouteProtocols((v.bgpExportProtocols as string[] | undefined) ?? []),
      aggregateBlocks: true,
    });
    await bgp.start();
    const b = bgp;
    metrics.bgp.setSource(() => b.speaker?.status());
  }
  const agent = new NodeAgent(
    { calc, acl, ifaces: kernel.ifaces, routes: kernel.routes, linkUp: (i) => kernel.linkUp(i) },
    log,
    {
      onApplied: (rec, model) => {
        for (const [stage, ms] of Object.entries(rec.stages)) metrics.applySeconds.observe({ stage }, ms / 1000);
        metrics.applies.inc();
        metrics.routes.set(rec.routes);
        metrics.rules.set({ dataplane: acl.name }, rec.rules);
        metrics.endpoints.set(model.endpoints.size);
        metrics.ipSets.set(model.ipSets.size);
        metrics.badData.set(model.problems.length);
        if (rec.error) metrics.errors.inc({ where: 'apply' });
        bgp?.onApplied(model, rec.inSync && !rec.error);
        if (!rec.error) reportChanges();
      },
      onProblem: (p) => problems.push(p),
    },
  );
  const syncer = new WatcherSyncer(client, RESOURCE_PREFIX, {
    onUpdates: (us) => {
      agent.onUpdates(us);
      bgp?.onUpdates(us);
    },
    onStatus: (s) => {
      log.info(`datastore: ${s}`);
      metrics.inSync.set(s === 'InSync' ? 1 : 0);
      if (s === 'InSync') metrics.resyncs.inc();
      agent.onSyncStatus(s);
      bgp?.onSyncStatus(s);
    },
    onError: (m) => {
      metrics.errors.inc({ where: 'datastore' });
      log.warn(m);
    },
  });
  // Route aggregation: this host's block affinities (Calico's confd watches the same keys).
  const affinitySyncer = bgp
    ? new WatcherSyncer(client, `${IPAM_PREFIX}host/${name}/`, {
        onUpdates: (us) => bgp?.onAffinityUpdates(us),
        onStatus: (s) => bgp?.onAffinityStatus(s),
        onError: (m) => {
          metrics.errors.inc({ where: 'datastore' });
          log.warn(`block affinities: ${m}`);
        },
      })
    : undefined;
  kernel.startMonitor(() => agent.kernelChanged());
  syncer.start();
  affinitySyncer?.start();

  const refresh = setInterval(() => agent.periodicResync(), parseDuration(String(v.routeRefreshInterval)));
  const aclRefresh = setInterval(() => agent.aclResync(), parseDuration(String(v.iptablesRefreshInterval)));
  const reportEvery = parseDuration(String(v.reportingInterval));
  const reporter = new StatusReporter(client, name, reportEvery);
  let reportTimer: NodeJS.Timeout | undefined;
  let reporting = false;
  let reportAgain = false;
  const report = async () => {
    if (reporting) {
      reportAgain = true;
      return;
    }
    reporting = true;
    clearTimeout(reportTimer);
    try {
      await reporter.report(agent.endpointStatuses());
    } catch (err) {
      metrics.errors.inc({ where: 'status' });
      log.warn(`status report failed: ${errorMessage(err)}`);
    } finally {
      reporting = false;
    }
    if (stopped) return;
    // Report soon after the first apply, then every interval (faster while not ready).
    const next = reportAgain ? 0 : agent.ready ? reportEvery : Math.min(reportEvery, 1_000);
    reportAgain = false;
    reportTimer = setTimeout(report, next);
  };
  reportTimer = setTimeout(report, 200);
  // An endpoint appearing or going is reported at once, not at the next interval: the CNI plugin
  // is waiting for it.
  let reportedIds = '';
  function reportChanges(): void {
    if (stopped || !agent.ready) return;
    const ids = [...agent.endpointStatuses().keys()].sort().join('\n');
    if (ids === reportedIds) return;
    reportedIds = ids;
    clearTimeout(reportTimer);
    reportTimer = setTimeout(report, 0);
  }

  const servers: Server[] = [];
  const host = String(v.healthHost);
  const statusDoc = () => ({
    node: name,
    version: VERSION,
    ready: agent.ready,
    datastore: { status: syncer.status, resyncs: syncer.resyncCount },
    dataplane: acl.name,
    lastApply: agent.lastApply,
    appliedRevision: agent.appliedRevision,
    counts: { endpoints: agent.model?.endpoints.size ?? 0, policies: agent.model?.policies.size ?? 0, ipsets: agent.model?.ipSets.size ?? 0, rules: agent.lastApply?.rules ?? 0, routes: agent.lastApply?.routes ?? 0 },
    endpoints: [...(agent.model?.endpoints.values() ?? [])].map((e) => ({
      id: e.id,
      iface: e.iface,
      status: e.type === 'host' ? 'host' : kernel.linkUp(e.iface) ? 'up' : 'down',
      addresses: [...e.ipv4Nets, ...e.ipv6Nets],
    })),
    problems: agent.model?.problems ?? [],
  });
  try {
    if (Number(v.healthPort) > 0) {
      servers.push(
        await startHealthServer(host, Number(v.healthPort), {
          live: () => ({ ok: true, detail: { live: true } }),
          ready: () => ({ ok: agent.ready, detail: { ready: agent.ready, datastore: syncer.status, lastApplyError: agent.lastApply?.error ?? null } }),
        }),
      );
    }
    if (Number(v.metricsPort) > 0) servers.push(await metrics.serve(host, Number(v.metricsPort)));
    servers.push(await startControlServer(String(v.runDir), { status: statusDoc, ...(bgp ? { bgp: () => ({ ...bgp.status() }) } : {}) }));
  } catch (err) {
    log.error(`cannot start a local server: ${errorMessage(err)}`);
    throw err;
  }
  log.info(`routecat node '${name}' started: dataplane ${acl.name}, interface prefix '${prefix}', BGP ${bgpOn ? 'on' : 'off (policy only)'}`);

  return {
    agent,
    stop: async (opts = {}) => {
      stopped = true;
      clearInterval(refresh);
      clearInterval(aclRefresh);
      if (reportTimer) clearTimeout(reportTimer);
      agent.stop();
      // The FIB's routes stay in the kernel like the agent's.
      await bgp?.stop('routecat node shutting down', opts);
      kernel.stop();
      await syncer.stop();
      await affinitySyncer?.stop();
      await reporter.close();
      await Promise.all(servers.map((s) => closeServer(s)));
      // Kernel state stays: traffic keeps flowing while the agent restarts.
    },
  };
}

/** The listen port when a flag, env var or file set it (it then wins over BGPConfiguration's). */
export function explicitListenPort(config: ResolvedConfig): { listenPort?: number } {
  const src = config.sources.bgpListenPort;
  return src === 'flag' || src === 'env' || src === 'file' ? { listenPort: Number(config.values.bgpListenPort) } : {};
}

export const runNodeRole: RoleRunner = async (args, env, io) => {
  const parsed = parseRoleArgs('node', args, env, io.out);
  if (!parsed) return 0;
  let config = parsed.config;
  setLogLevel(config.values.logLevel as LogLevel);
  const client = connectEtcd(etcdOptionsFromConfig(config));
  let stopping = false;
  const name = (config.values.nodename as string | undefined) || osHostname();
  const felix = await retryUntil('reading FelixConfiguration', () => felixConfigLayer(new ResourceStore(client), name), () => stopping);
  if (felix && Object.keys(felix).length > 0) {
    config = loadConfig('node', parsed.options, env, datastoreLayer('node', felix, undefined));
    setLogLevel(config.values.logLevel as LogLevel);
  }
  const node = await startNode(config, client);
  // SIGTERM (systemd, kubelet, an upgrade) is a restart: BGP peers keep this host's routes for
  // the graceful-restart time. SIGINT (an operator at the terminal) withdraws them with a Cease.
  const restarting = await new Promise<boolean>((resolve) => {
    const onSignal = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig}: stopping (kernel state is left in place${sig === 'SIGTERM' ? '; BGP peers keep our routes for the restart time' : '; BGP peers are told to withdraw our routes'})`);
      resolve(sig === 'SIGTERM');
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
  await node.stop({ restarting });
  client.close();
  return 0;
};
