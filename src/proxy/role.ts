/**
 * `routecat proxy`: an etcd v3 proxy cache, one per host, the composition root of that role.
 * Serves etcd's gRPC API on --listen (default 127.0.0.1:2379) in front of --etcd-endpoints,
 * answering serializable reads and watches under --cache-prefixes (default /calico/) from a cache
 * fed by one upstream watch per prefix, and passing everything else through.
 */
import { logger, setLogLevel, type LogLevel } from '../log.ts';
import { parseRoleArgs } from '../cli/role-options.ts';
import { etcdOptionsFromConfig } from '../cli/etcd-config.ts';
import type { RoleRunner } from '../cli/main.ts';
import { UsageError } from '../errors.ts';
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
  const upstream = new Upstream(etcdOptionsFromConfig(parsed.config));
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const proxy = await startProxy({ listen: String(v.listen), cachePrefixes: prefixes, upstream });
  log.info(`${await signalled}: stopping`);
  await proxy.stop();
  upstream.close();
  return 0;
};
