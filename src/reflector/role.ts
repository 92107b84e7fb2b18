/**
 * `routecat reflector`: a BGP route reflector (RFC 4456) with no data plane, the composition root
 * of that role. Registers its Node resource (spec.bgp.ipv4Address and routeReflectorClusterID,
 * which defaults to its own IPv4 address), follows the BGP resources in the datastore with the
 * same computation as a node (src/agent/bgp-config.ts via BgpNode) and runs the speaker: no FIB,
 * no local routes, no agent. Serves health, metrics and the control socket (`routecat status`).
 */
import { hostname as osHostname } from 'node:os';
import type { Server } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from '../version.ts';
import { errorMessage, UsageError } from '../errors.ts';
import { logger, setLogLevel, type LogLevel } from '../log.ts';
import { parseRoleArgs } from '../cli/role-options.ts';
import { etcdOptionsFromConfig } from '../cli/etcd-config.ts';
import type { RoleRunner } from '../cli/main.ts';
import type { ResolvedConfig } from '../config/resolve.ts';
import { connectEtcd, type Etcd3 } from '../datastore/etcd.ts';
import { RESOURCE_PREFIX } from '../datastore/keys.ts';
import { ResourceStore } from '../datastore/resource-store.ts';
import { WatcherSyncer } from '../datastore/syncer.ts';
import type { Speaker, SpeakerConfig } from '../bgp/speaker-api.ts';
import { BgpNode } from '../agent/bgp-node.ts';
import { explicitListenPort, registerNode, retryUntil } from '../agent/node-role.ts';
import { startHealthServer, closeServer } from '../agent/status/health.ts';
import { BgpMetrics, serveMetrics } from '../agent/status/metrics.ts';
import { startControlServer } from '../agent/status/control.ts';

const log = logger('reflector');

export interface RunningReflector {
  readonly bgp: BgpNode;
  stop(): Promise<void>;
}

function bareIp(ip: string): string {
  const slash = ip.indexOf('/');
  return slash < 0 ? ip : ip.slice(0, slash);
}

/**
 * @param createSpeaker the BGP speaker factory (the real one unless a test passes a fake)
 */
export async function startReflector(config: ResolvedConfig, client: Etcd3, createSpeaker?: (c: SpeakerConfig) => Speaker): Promise<RunningReflector> {
  const v = config.values;
  const name = (v.nodename as string | undefined) || osHostname();
  const ip = v.ip as string | undefined;
  const ip6 = v.ip6 as string | undefined;
  if (!ip) throw new UsageError('routecat reflector needs --ip (its IPv4 BGP address, also the default cluster ID)');
  const clusterId = v.clusterId as string | undefined;
  let stopped = false;
  const store = new ResourceStore(client);
  const cidr = ip.includes('/') ? ip : `${ip}/32`;
  const cidr6 = ip6 ? (ip6.includes('/') ? ip6 : `${ip6}/128`) : undefined;
  await retryUntil(
    'registering the Node resource',
    () =>
      registerNode(store, name, cidr, cidr6, v.asNumber as number | undefined, clusterId ? { set: { routeReflectorClusterID: clusterId } } : { defaults: { routeReflectorClusterID: bareIp(ip) } }),
    () => stopped,
  );

  let factory = createSpeaker;
  if (!factory) {
    const { BgpSpeaker } = await import('../bgp/speaker/speaker.ts');
    factory = (c) => new BgpSpeaker(c);
  }
  const bgp = new BgpNode({
    nodeName: name,
    createSpeaker: factory,
    originates: false,
    compute: { ...explicitListenPort(config), clusterId: clusterId ?? bareIp(ip) },
    log: logger('bgp'),
  });
  await bgp.start();

  const syncer = new WatcherSyncer(client, RESOURCE_PREFIX, {
    onUpdates: (us) => bgp.onUpdates(us),
    onStatus: (s) => {
      log.info(`datastore: ${s}`);
      bgp.onSyncStatus(s);
    },
    onError: (m) => log.warn(m),
  });
  syncer.start();

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'routecat_process_' });
  new BgpMetrics(registry, () => bgp.speaker?.status());

  const ready = () => syncer.status === 'InSync' && bgp.speaker !== undefined;
  const statusDoc = () => ({
    role: 'reflector',
    node: name,
    version: VERSION,
    ready: ready(),
    datastore: { status: syncer.status, resyncs: syncer.resyncCount },
  });
  const servers: Server[] = [];
  const host = String(v.healthHost);
  try {
    if (Number(v.healthPort) > 0) {
      servers.push(
        await startHealthServer(host, Number(v.healthPort), {
          live: () => ({ ok: true, detail: { live: true } }),
          ready: () => ({ ok: ready(), detail: { ready: ready(), datastore: syncer.status, bgp: bgp.status().state } }),
        }),
      );
    }
    if (Number(v.metricsPort) > 0) servers.push(await serveMetrics(registry, host, Number(v.metricsPort)));
    servers.push(await startControlServer(String(v.runDir), { status: statusDoc, bgp: () => ({ ...bgp.status() }) }));
  } catch (err) {
    log.error(`cannot start a local server: ${errorMessage(err)}`);
    await bgp.stop();
    await syncer.stop();
    await Promise.all(servers.map((s) => closeServer(s)));
    throw err;
  }
  log.info(`routecat reflector '${name}' started: ${ip}, cluster ID ${clusterId ?? `from the Node (default ${bareIp(ip)})`}`);

  return {
    bgp,
    stop: async () => {
      stopped = true;
      await bgp.stop('routecat reflector shutting down');
      await syncer.stop();
      await Promise.all(servers.map((s) => closeServer(s)));
    },
  };
}

export const runReflectorRole: RoleRunner = async (args, env, io) => {
  const parsed = parseRoleArgs('reflector', args, env, io.out);
  if (!parsed) return 0;
  const config = parsed.config;
  setLogLevel(config.values.logLevel as LogLevel);
  const client = connectEtcd(etcdOptionsFromConfig(config));
  let stopping = false;
  const signalled = new Promise<void>((resolve) => {
    const onSignal = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig}: stopping`);
      resolve();
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
  const rr = await startReflector(config, client);
  await signalled;
  await rr.stop();
  client.close();
  return 0;
};
