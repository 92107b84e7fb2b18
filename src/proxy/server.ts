/**
 * The proxy's gRPC server: etcd's KV, Watch, Lease, Maintenance, Cluster and Auth services on one
 * address (loopback unless allowed otherwise, TLS when given a certificate). Ranges inside a
 * cached prefix are answered from the cache (serializable ones at once, linearizable ones once the
 * cache has reached a read index fetched from the cluster); Watch streams go through
 * WatchSession; every other call is passed to the cluster byte for byte and its answer (or error)
 * returned unchanged. A write that may touch a cached prefix is acknowledged only once the cache
 * has seen its revision, so a client reads its own writes. Composes caches, feeds, the upstream
 * channels and the metrics; owns the listening socket.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { logger } from '../log.ts';
import { UsageError, errorMessage } from '../errors.ts';
import { ETCD_METHODS, PROXIED_SERVICES, etcdMethod, rawServiceDefinition, type EtcdMethod } from './etcd-proto.ts';
import { PrefixCache, rangeOverlaps, type KeyValue } from './cache.ts';
import { PrefixFeed, type ResponseHeader } from './prefix-feed.ts';
import { WatchSession, type WatchCounters } from './watch-session.ts';
import { forwardedMetadata, type Upstream } from './upstream.ts';
import { ProxyMetrics } from './metrics.ts';

const log = logger('proxy');
const RANGE = etcdMethod('KV', 'Range');
const PUT = etcdMethod('KV', 'Put');
const DELETE_RANGE = etcdMethod('KV', 'DeleteRange');
const TXN = etcdMethod('KV', 'Txn');
const LEASE_REVOKE = etcdMethod('Lease', 'LeaseRevoke');
/** How long a linearizable read waits for the cache to reach its read index before it is forwarded. */
const READ_INDEX_WAIT_MS = 1_000;
/** How long a write's answer waits for the cache to see the write (then it is sent anyway). */
const WRITE_VISIBLE_WAIT_MS = 2_000;

export interface ProxyTls {
  readonly certFile: string;
  readonly keyFile: string;
  /** When set, clients must present a certificate signed by this CA. */
  readonly clientCaFile?: string;
}

export interface ProxyOptions {
  /** host:port to listen on (port 0 picks one). */
  readonly listen: string;
  readonly cachePrefixes: readonly string[];
  readonly upstream: Upstream;
  /** Events kept per cache for watches that start in the past (default 10,000). */
  readonly windowSize?: number;
  readonly tls?: ProxyTls;
  /** Permit a non-loopback listen address. */
  readonly allowRemote?: boolean;
  /** A watch client this far behind (bytes unsent) is cut off (default 64 MiB). */
  readonly maxWatchBacklogBytes?: number;
  /** Where the routecat_proxy_* metrics go (default: a registry of the proxy's own). */
  readonly registry?: Registry;
}

export interface ProxyStats extends WatchCounters {
  rangesFromCache: number;
  /** Linearizable ranges answered from the cache after a read index. */
  rangesAfterReadIndex: number;
  /** Ranges inside a cached prefix that still had to go to the cluster. */
  rangesMissed: number;
  /** Unary and stream calls passed through to the cluster (watches counted separately). */
  forwarded: number;
  bytesFromUpstream: number;
  watchStreams: number;
}

export interface RunningProxy {
  readonly port: number;
  readonly feeds: readonly PrefixFeed[];
  readonly stats: ProxyStats;
  readonly registry: Registry;
  /** Every cache has listed its prefix once. */
  ready(): boolean;
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

/** The cache that can answer this Range exactly (at its current revision), if there is one. */
export function cacheFor(req: RangeRequest, feeds: readonly PrefixFeed[]): PrefixFeed | undefined {
  if (req.revision !== '0') return undefined;
  // Unsorted results come in key order; a key-ascending sort is the same thing.
  if (!(req.sort_order === 'None' || (req.sort_order === 'Ascend' && req.sort_target === 'Key'))) return undefined;
  if (req.min_mod_revision !== '0' || req.max_mod_revision !== '0' || req.min_create_revision !== '0' || req.max_create_revision !== '0') return undefined;
  const key = req.key.toString('latin1');
  const rangeEnd = req.range_end.toString('latin1');
  return feeds.find((f) => f.serving && f.cache.contains(key, rangeEnd));
}

/** The feeds whose prefix a forwarded write may change (undefined: cannot tell, so all of them). */
function feedsTouched(m: EtcdMethod, request: Buffer, feeds: readonly PrefixFeed[]): readonly PrefixFeed[] {
  try {
    if (m === PUT) {
      const key = (PUT.decodeRequest(request) as { key: Buffer }).key.toString('latin1');
      return feeds.filter((f) => f.cache.contains(key, ''));
    }
    if (m === DELETE_RANGE) {
      const r = DELETE_RANGE.decodeRequest(request) as { key: Buffer; range_end: Buffer };
      return feeds.filter((f) => rangeOverlaps(r.key.toString('latin1'), r.range_end.toString('latin1'), f.cache.prefix, f.cache.end));
    }
  } catch {
    // etcd will reject it; nothing to wait for
    return [];
  }
  return feeds; // Txn, LeaseRevoke: may touch anything
}

function asServiceError(err: grpc.ServiceError): Partial<grpc.StatusObject> {
  return { code: err.code, details: err.details, metadata: err.metadata };
}

function isLoopback(listen: string): boolean {
  const host = listen.startsWith('[') ? listen.slice(1, listen.indexOf(']')) : listen.slice(0, listen.lastIndexOf(':'));
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

function serverCredentials(tls: ProxyTls | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new UsageError(`cannot read the proxy's ${what} ${file}: ${errorMessage(err)}`);
    }
  };
  const ca = tls.clientCaFile ? read(tls.clientCaFile, 'client CA certificate') : null;
  return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: read(tls.certFile, 'certificate'), private_key: read(tls.keyFile, 'key') }], Boolean(ca));
}

export async function startProxy(opts: ProxyOptions): Promise<RunningProxy> {
  const { upstream } = opts;
  if (!opts.allowRemote && !isLoopback(opts.listen)) {
    throw new UsageError(`--listen ${opts.listen} is not a loopback address: the proxy serves the local host; pass --allow-remote (with TLS and client certificates) to serve others`);
  }
  const credentials = serverCredentials(opts.tls);
  const feeds = opts.cachePrefixes.map((p) => new PrefixFeed(new PrefixCache(p, opts.windowSize), upstream, logger(`proxy ${p}`)));
  const stats: ProxyStats = {
    rangesFromCache: 0, rangesAfterReadIndex: 0, rangesMissed: 0, forwarded: 0, bytesFromUpstream: 0, watchStreams: 0,
    localWatches: 0, forwardedWatches: 0, forwardedOpen: 0, forwardedResumes: 0, slowCutoffs: 0, bytesToClients: 0,
  };
  const registry = opts.registry ?? new Registry();
  const metrics = new ProxyMetrics(registry, { feeds, stats, upstream });
  const sessions = new Set<WatchSession>();
  const maxBacklogBytes = opts.maxWatchBacklogBytes ?? 64 * 2 ** 20;
  upstream.onMemberChange((from, to, reason) => log.warn(`etcd member ${from} unavailable (${reason}): now using ${to}`));

  const reply = (cb: grpc.sendUnaryData<Buffer>, res: Buffer) => {
    stats.bytesToClients += res.length;
    cb(null, res);
  };

  const forwardUnary = (m: EtcdMethod, call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>, after?: (res: Buffer) => Promise<void>) => {
    stats.forwarded++;
    metrics.sawClient(call.getPeer());
    upstream.unary(m, call.request, forwardedMetadata(call.metadata), call.getDeadline(), (err, res) => {
      if (err) return cb(asServiceError(err));
      stats.bytesFromUpstream += res!.length;
      if (!after) return reply(cb, res!);
      after(res!).then(
        () => reply(cb, res!),
        () => reply(cb, res!),
      );
    });
  };

  /**
   * Waits (bounded) until every cache has reached this write's revision, so what the client reads
   * next is at least as new as its write. A cache the write did not touch and that is exactly one
   * revision behind a write known to have made that revision can be moved on at once.
   */
  const writeVisible = (m: EtcdMethod, request: Buffer) => async (res: Buffer) => {
    const live = feeds.filter((f) => f.connected);
    if (live.length === 0) return;
    const answer = m.decodeResponse(res) as { header: ResponseHeader | null; deleted?: string };
    const revision = Number(answer.header?.revision ?? 0);
    if (revision <= 0) return;
    const touched = new Set(feedsTouched(m, request, feeds));
    // A Put always makes a new revision, a DeleteRange only when it deleted something; a Txn may
    // have made none, and then its revision may belong to someone else's write.
    const madeRevision = m === PUT || (m === DELETE_RANGE && answer.deleted !== '0');
    await Promise.all(
      live.map((f) => {
        if (madeRevision && !touched.has(f)) f.unchangedAt(revision);
        return f.waitForRevision(revision, WRITE_VISIBLE_WAIT_MS);
      }),
    );
  };

  const answerRange = (feed: PrefixFeed, req: RangeRequest, cb: grpc.sendUnaryData<Buffer>) => {
    const res = feed.cache.range({
      key: req.key.toString('latin1'),
      rangeEnd: req.range_end.toString('latin1'),
      limit: Number(req.limit),
      keysOnly: req.keys_only,
      countOnly: req.count_only,
    });
    const header = { ...feed.header, revision: String(feed.cache.revision) };
    reply(cb, RANGE.encodeResponse({ header, kvs: res.kvs satisfies KeyValue[], more: res.more, count: String(res.count) }));
  };

  const rangeHandler = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    let req: RangeRequest;
    try {
      req = RANGE.decodeRequest(call.request) as RangeRequest;
    } catch {
      return forwardUnary(RANGE, call, cb); // let etcd say what is wrong with it
    }
    const feed = cacheFor(req, feeds);
    if (!feed) {
      if (feeds.some((f) => f.cache.contains(req.key.toString('latin1'), req.range_end.toString('latin1')))) stats.rangesMissed++;
      return forwardUnary(RANGE, call, cb);
    }
    metrics.sawClient(call.getPeer());
    if (req.serializable) {
      stats.rangesFromCache++;
      return answerRange(feed, req, cb);
    }
    // Linearizable: the cache may answer once it has caught up with the cluster's revision now.
    feed
      .readIndex()
      .then((index) => feed.waitForRevision(index, READ_INDEX_WAIT_MS))
      .catch(() => false)
      .then((caughtUp) => {
        if (caughtUp) {
          stats.rangesAfterReadIndex++;
          answerRange(feed, req, cb);
        } else {
          stats.rangesMissed++;
          forwardUnary(RANGE, call, cb);
        }
      });
  };

  const handlerFor = (m: EtcdMethod): grpc.UntypedHandleCall => {
    if (m === RANGE) return rangeHandler;
    if (m === PUT || m === DELETE_RANGE || m === TXN || m === LEASE_REVOKE) {
      return (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => forwardUnary(m, call, cb, writeVisible(m, call.request));
    }
    if (m.service === 'Watch' && m.name === 'Watch') {
      return (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        const s = new WatchSession(call, { feeds, upstream, counters: stats, log, maxBacklogBytes });
        const peer = call.getPeer();
        sessions.add(s);
        stats.watchStreams++;
        metrics.streamOpened(peer);
        let open = true;
        const forget = () => {
          if (!open) return;
          open = false;
          sessions.delete(s);
          stats.watchStreams--;
          metrics.streamClosed(peer);
        };
        call.on('end', forget);
        call.on('cancelled', forget);
        call.on('error', forget);
        call.on('close', forget);
      };
    }
    if (!m.requestStream && !m.responseStream) return (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => forwardUnary(m, call, cb);
    if (!m.requestStream) {
      return (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        stats.forwarded++;
        metrics.sawClient(call.getPeer());
        const { stream: up, member } = upstream.serverStream(m, call.request, forwardedMetadata(call.metadata));
        up.on('data', (b: Buffer) => call.write(b));
        up.on('end', () => call.end());
        up.on('error', (err: grpc.ServiceError) => {
          upstream.failed(member, err);
          call.emit('error', asServiceError(err));
        });
        call.on('cancelled', () => up.cancel());
      };
    }
    // Bidirectional (LeaseKeepAlive): a pipe each way.
    return (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      stats.forwarded++;
      const peer = call.getPeer();
      metrics.streamOpened(peer);
      const { stream: up, member } = upstream.duplex(m, forwardedMetadata(call.metadata));
      up.on('data', (b: Buffer) => call.write(b));
      up.on('end', () => call.end());
      up.on('error', (err: grpc.ServiceError) => {
        upstream.failed(member, err);
        call.emit('error', asServiceError(err));
      });
      call.on('data', (b: Buffer) => up.write(b));
      call.on('end', () => up.end());
      call.on('cancelled', () => up.cancel());
      call.on('error', () => up.cancel());
      call.on('close', () => metrics.streamClosed(peer));
    };
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1, 'grpc.enable_channelz': 0 });
  for (const service of PROXIED_SERVICES) {
    const impl: grpc.UntypedServiceImplementation = {};
    for (const m of ETCD_METHODS.values()) if (m.service === service) impl[m.name] = handlerFor(m);
    server.addService(rawServiceDefinition(service), impl);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(opts.listen, credentials, (err, p) => (err ? reject(new UsageError(`cannot listen on ${opts.listen}: ${err.message}`)) : resolve(p))),
  );
  for (const f of feeds) f.start();
  log.info(`serving etcd's API on ${opts.listen} (port ${port}${opts.tls ? ', TLS' : ''}), upstream ${upstream.targets.join(', ')}, caching ${opts.cachePrefixes.join(', ')}`);

  return {
    port,
    feeds,
    stats,
    registry,
    ready: () => feeds.every((f) => f.serving),
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
