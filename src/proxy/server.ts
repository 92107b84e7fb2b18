/**
 * The proxy's gRPC server: etcd's KV, Watch, Lease, Maintenance, Cluster and Auth services on one
 * loopback address. Serializable Ranges inside a cached prefix are answered from the cache and
 * Watch streams go through WatchSession; every other call is passed to the cluster byte for byte
 * and its answer (or error) returned unchanged. Composes caches, feeds and the upstream channel;
 * owns the listening socket.
 */
import * as grpc from '@grpc/grpc-js';
import { logger } from '../log.ts';
import { ETCD_METHODS, PROXIED_SERVICES, etcdMethod, rawServiceDefinition, type EtcdMethod } from './etcd-proto.ts';
import { PrefixCache, type KeyValue } from './cache.ts';
import { PrefixFeed } from './prefix-feed.ts';
import { WatchSession } from './watch-session.ts';
import { forwardedMetadata, type Upstream } from './upstream.ts';

const log = logger('proxy');
const RANGE = etcdMethod('KV', 'Range');

export interface ProxyOptions {
  /** host:port to listen on (port 0 picks one). */
  readonly listen: string;
  readonly cachePrefixes: readonly string[];
  readonly upstream: Upstream;
  /** Events kept per cache for watches that start in the past (default 10,000). */
  readonly windowSize?: number;
}

export interface ProxyStats {
  rangesFromCache: number;
  /** Unary and stream calls passed through to the cluster (watches counted separately). */
  forwarded: number;
  localWatches: number;
  forwardedWatches: number;
}

export interface RunningProxy {
  readonly port: number;
  readonly feeds: readonly PrefixFeed[];
  readonly stats: ProxyStats;
  /** Resolves when every cache has listed its prefix once. */
  synced(): Promise<void>;
  stop(): Promise<void>;
}

interface RangeRequest {
  key: Buffer;
  range_end: Buffer;
  limit: string;
  revision: string;
  sort_order: string;
  sort_target: string;
  serializable: boolean;
  keys_only: boolean;
  count_only: boolean;
  min_mod_revision: string;
  max_mod_revision: string;
  min_create_revision: string;
  max_create_revision: string;
}

/** The cache answering this Range, if the request is one a cache can answer exactly. */
export function cacheFor(req: RangeRequest, feeds: readonly PrefixFeed[]): PrefixFeed | undefined {
  if (!req.serializable || req.revision !== '0') return undefined;
  // Unsorted results come in key order; a key-ascending sort is the same thing.
  if (!(req.sort_order === 'None' || (req.sort_order === 'Ascend' && req.sort_target === 'Key'))) return undefined;
  if (req.min_mod_revision !== '0' || req.max_mod_revision !== '0' || req.min_create_revision !== '0' || req.max_create_revision !== '0') return undefined;
  const key = req.key.toString('latin1');
  const rangeEnd = req.range_end.toString('latin1');
  return feeds.find((f) => f.status === 'InSync' && f.cache.contains(key, rangeEnd));
}

function asServiceError(err: grpc.ServiceError): Partial<grpc.StatusObject> {
  return { code: err.code, details: err.details, metadata: err.metadata };
}

export async function startProxy(opts: ProxyOptions): Promise<RunningProxy> {
  const { upstream } = opts;
  const feeds = opts.cachePrefixes.map((p) => new PrefixFeed(new PrefixCache(p, opts.windowSize), upstream, logger(`proxy ${p}`)));
  const stats: ProxyStats = { rangesFromCache: 0, forwarded: 0, localWatches: 0, forwardedWatches: 0 };
  const sessions = new Set<WatchSession>();

  const forwardUnary = (m: EtcdMethod, call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    stats.forwarded++;
    upstream.unary(m, call.request, forwardedMetadata(call.metadata), call.getDeadline(), (err, res) => (err ? cb(asServiceError(err)) : cb(null, res)));
  };

  const handlerFor = (m: EtcdMethod): grpc.UntypedHandleCall => {
    if (m === RANGE) {
      return (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        let req: RangeRequest;
        try {
          req = RANGE.decodeRequest(call.request) as RangeRequest;
        } catch {
          return forwardUnary(m, call, cb); // let etcd say what is wrong with it
        }
        const feed = cacheFor(req, feeds);
        if (!feed) return forwardUnary(m, call, cb);
        stats.rangesFromCache++;
        const res = feed.cache.range({
          key: req.key.toString('latin1'),
          rangeEnd: req.range_end.toString('latin1'),
          limit: Number(req.limit),
          keysOnly: req.keys_only,
          countOnly: req.count_only,
        });
        const header = { ...feed.header, revision: String(feed.cache.revision) };
        cb(null, RANGE.encodeResponse({ header, kvs: res.kvs satisfies KeyValue[], more: res.more, count: String(res.count) }));
      };
    }
    if (m.service === 'Watch' && m.name === 'Watch') {
      return (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        const s = new WatchSession(call, feeds, upstream, stats);
        sessions.add(s);
        const forget = () => sessions.delete(s);
        call.on('end', forget);
        call.on('cancelled', forget);
        call.on('error', forget);
      };
    }
    if (!m.requestStream && !m.responseStream) return (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => forwardUnary(m, call, cb);
    if (!m.requestStream) {
      return (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        stats.forwarded++;
        const up = upstream.serverStream(m, call.request, forwardedMetadata(call.metadata));
        up.on('data', (b: Buffer) => call.write(b));
        up.on('end', () => call.end());
        up.on('error', (err: grpc.ServiceError) => call.emit('error', asServiceError(err)));
        call.on('cancelled', () => up.cancel());
      };
    }
    // Bidirectional (LeaseKeepAlive): a pipe each way.
    return (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      stats.forwarded++;
      const up = upstream.duplex(m, forwardedMetadata(call.metadata));
      up.on('data', (b: Buffer) => call.write(b));
      up.on('end', () => call.end());
      up.on('error', (err: grpc.ServiceError) => call.emit('error', asServiceError(err)));
      call.on('data', (b: Buffer) => up.write(b));
      call.on('end', () => up.end());
      call.on('cancelled', () => up.cancel());
      call.on('error', () => up.cancel());
    };
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  for (const service of PROXIED_SERVICES) {
    const impl: grpc.UntypedServiceImplementation = {};
    for (const m of ETCD_METHODS.values()) if (m.service === service) impl[m.name] = handlerFor(m);
    server.addService(rawServiceDefinition(service), impl);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(opts.listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  for (const f of feeds) f.start();
  log.info(`serving etcd's API on ${opts.listen} (port ${port}), upstream ${upstream.target}, caching ${opts.cachePrefixes.join(', ')}`);

  return {
    port,
    feeds,
    stats,
    synced: async () => {
      await Promise.all(feeds.map((f) => f.synced()));
    },
    stop: async () => {
      for (const f of feeds) f.stop();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
