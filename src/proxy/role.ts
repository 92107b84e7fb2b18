/**
 * `routecat proxy`: an etcd v3 proxy cache, one per host, the composition root of that role.
 * Serves etcd's gRPC API on --listen (default 127.0.0.1:2379, TLS with --listen-cert-file) in
 * front of --etcd-endpoints, answering reads and watches under --cache-prefixes (default
 * /calico/) from a cache fed by one upstream watch per prefix, and passing everything else
 * through. /liveness, /readiness and /metrics on --health-host:--health-port (default 9097).
 */
import type { Server } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { logger, setLogLevel, type LogLevel } from '../log.ts';
import { parseRoleArgs } from '../cli/role-options.ts';
import { etcdOptionsFromConfig } from '../cli/etcd-config.ts';
import type { RoleRunner } from '../cli/main.ts';
import { UsageError } from '../errors.ts';
import { closeServer, startHealthServer } from '../agent/status/health.ts';
import { Upstream } from './upstream.ts';
import { startProxy } from './server.ts';

const log = logger('proxy');

export const runProxyRole: RoleRunner = async (args, env, io) => {
  const parsed = parseRoleArgs('proxy', args, env, io.out);
  if (!parsed) return 0;
  const v = parsed.config.values;
  setLogLevel(v.logLevel as LogLevel);
  const prefixes = (v.cachePrefixes as string[] | undefined) ?? ['/calico/'];
  for (const p of prefixes) if (p === '') throw new UsageError('an empty --cache-prefixes entry would cache the whole keyspace: name the prefixes');
  const certFile = v.listenCertFile as string | undefined;
  const keyFile = v.listenKeyFile as string | undefined;
  const clientCaFile = v.listenClientCaFile as string | undefined;
  if (Boolean(certFile) !== Boolean(keyFile)) throw new UsageError('--listen-cert-file and --listen-key-file must be given together');
  if (clientCaFile && !certFile) throw new UsageError('--listen-client-ca-file needs --listen-cert-file and --listen-key-file (client certificates only exist over TLS)');
  const window = Number(v.cacheWindow);
  if (!(window >= 1)) throw new UsageError(`--cache-window ${window}: must be at least 1`);
  const backlogMib = Number(v.maxWatchBacklogMib);
  if (!(backlogMib >= 1)) throw new UsageError(`--max-watch-backlog-mib ${backlogMib}: must be at least 1`);

  const upstream = new Upstream(etcdOptionsFromConfig(parsed.config));
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'routecat_proxy_process_' });
  const proxy = await startProxy({
    listen: String(v.listen),
    cachePrefixes: prefixes,
    upstream,
    windowSize: window,
    tls: certFile && keyFile ? { certFile, keyFile, clientCaFile } : undefined,
    allowRemote: Boolean(v.allowRemote),
    maxWatchBacklogBytes: backlogMib * 2 ** 20,
    registry,
  });
  let health: Server | undefined;
  const port = Number(v.proxyHealthPort);
  if (port > 0) {
    health = await startHealthServer(
      String(v.healthHost),
      port,
      {
        live: () => ({ ok: true, detail: { live: true } }),
        ready: () => ({
          ok: proxy.ready(),
          detail: { ready: proxy.ready(), upstream: upstream.target, caches: proxy.feeds.map((f) => ({ prefix: f.cache.prefix, status: f.status, revision: f.cache.revision, keys: f.cache.size })) },
        }),
      },
      registry,
    );
  }
  log.info(`${await signalled}: stopping`);
  await closeServer(health);
  await proxy.stop();
  upstream.close();
  return 0;
};
