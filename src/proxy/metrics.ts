/**
 * The proxy's Prometheus metrics (prefix routecat_proxy_), read from its counters at scrape time,
 * and the bookkeeping of which clients are connected. Owns no sockets.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { PrefixFeed } from './prefix-feed.ts';
import type { ProxyStats } from './server.ts';
import type { Upstream } from './upstream.ts';

/** A client that made a call this recently counts as connected even with no stream open. */
const CLIENT_IDLE_MS = 60_000;

export interface ProxyMetricSources {
  readonly feeds: readonly PrefixFeed[];
  readonly stats: ProxyStats;
  readonly upstream: Upstream;
}

export class ProxyMetrics {
  /** Open streams per client connection (peer address). */
  private readonly streams = new Map<string, number>();
  private readonly lastCall = new Map<string, number>();

  constructor(registry: Registry, src: ProxyMetricSources) {
    const self = this;
    const { feeds, stats, upstream } = src;
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
    // Counters kept as plain numbers by the proxy: set to their absolute values at scrape time.
    const counter = (name: string, help: string, label: string | undefined, read: () => Record<string, number>) =>
      new Counter({
        name,
        help,
        labelNames: label ? [label] : [],
        registers: [registry],
        collect() {
          this.reset();
          for (const [value, n] of Object.entries(read())) this.inc(label ? { [label]: value } : {}, n);
        },
      });
    gauge('routecat_proxy_clients', 'Client connections with an open stream or a call in the last minute', () => self.clients());
    gauge('routecat_proxy_client_watch_streams', 'Open Watch streams from clients', () => stats.watchStreams);
    gauge('routecat_proxy_upstream_watches', 'Watch streams open to etcd: one per cached prefix plus one per forwarded watcher', () => feeds.filter((f) => f.connected).length + stats.forwardedOpen);
    gauge('routecat_proxy_upstream_connected', '1 when every cache\'s upstream watch is established', () => (feeds.every((f) => f.connected) ? 1 : 0));
    new Gauge({
      name: 'routecat_proxy_cache_keys',
      help: 'Keys held in the cache, per prefix',
      labelNames: ['prefix'],
      registers: [registry],
      collect() {
        for (const f of feeds) this.set({ prefix: f.cache.prefix }, f.cache.size);
      },
    });
    new Gauge({
      name: 'routecat_proxy_cache_revision',
      help: 'The etcd revision the cache reflects, per prefix',
      labelNames: ['prefix'],
      registers: [registry],
      collect() {
        for (const f of feeds) this.set({ prefix: f.cache.prefix }, f.cache.revision);
      },
    });
    counter('routecat_proxy_range_total', 'Range requests inside a cached prefix: hit (answered by the cache, serializable or after a read index) or miss (sent to etcd)', 'result', () => ({
      hit: stats.rangesFromCache + stats.rangesAfterReadIndex,
      miss: stats.rangesMissed,
    }));
    counter('routecat_proxy_watchers_total', 'Watchers created by clients: local (served by the cache) or forwarded (own upstream watch)', 'kind', () => ({
      local: stats.localWatches,
      forwarded: stats.forwardedWatches,
    }));
    counter('routecat_proxy_bytes_total', 'Bytes of etcd answers: sent to clients, and received from etcd for forwarded calls', 'direction', () => ({
      to_clients: stats.bytesToClients,
      from_upstream: stats.bytesFromUpstream,
    }));
    counter('routecat_proxy_forwarded_total', 'Calls passed through to etcd (watches not included)', undefined, () => ({ '': stats.forwarded }));
    counter('routecat_proxy_upstream_failovers_total', 'Times the proxy left an unavailable etcd member for the next', undefined, () => ({ '': upstream.failovers }));
    counter('routecat_proxy_cache_resyncs_total', 'Full re-lists of a cached prefix after the first (compaction overtook the cache)', undefined, () => ({ '': feeds.reduce((n, f) => n + f.resyncs, 0) }));
    counter('routecat_proxy_slow_watchers_total', 'Client watch streams cut off for falling too far behind', undefined, () => ({ '': stats.slowCutoffs }));
  }

  sawClient(peer: string): void {
    this.lastCall.set(peer, Date.now());
  }

  streamOpened(peer: string): void {
    this.streams.set(peer, (this.streams.get(peer) ?? 0) + 1);
  }

  streamClosed(peer: string): void {
    const n = (this.streams.get(peer) ?? 1) - 1;
    if (n <= 0) this.streams.delete(peer);
    else this.streams.set(peer, n);
    this.lastCall.set(peer, Date.now());
  }

  /** Distinct client connections: an open stream, or a call within the last minute. */
  clients(): number {
    const cutoff = Date.now() - CLIENT_IDLE_MS;
    const peers = new Set(this.streams.keys());
    for (const [peer, at] of this.lastCall) {
      if (at >= cutoff) peers.add(peer);
      else this.lastCall.delete(peer);
    }
    return peers.size;
  }
}
