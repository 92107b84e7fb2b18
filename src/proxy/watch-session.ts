/**
 * One client's etcd Watch stream on the proxy. Each watcher it creates is either local (its range
 * lies in a cached prefix and its start revision is still in the cache's window: served from the
 * cache's event stream, sharing the cache's one upstream watch) or forwarded (its own upstream
 * watch stream, with watch IDs rewritten). Owns its watchers; never changes the cache.
 */
import type * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../errors.ts';
import { etcdMethod } from './etcd-proto.ts';
import { keyInRange, type CacheEvent } from './cache.ts';
import type { PrefixFeed, ResponseHeader } from './prefix-feed.ts';
import { forwardedMetadata, type Upstream } from './upstream.ts';

const WATCH = etcdMethod('Watch', 'Watch');
/** Catch-up events are sent in responses of at most this many events. */
const REPLAY_CHUNK = 1_000;

interface CreateRequest {
  key: Buffer;
  range_end: Buffer;
  start_revision: string;
  progress_notify: boolean;
  filters: string[];
  prev_kv: boolean;
  watch_id: string;
  fragment: boolean;
}

interface WatchRequest {
  request_union?: 'create_request' | 'cancel_request' | 'progress_request';
  create_request?: CreateRequest;
  cancel_request?: { watch_id: string };
}

export interface WatchResponse {
  header?: ResponseHeader;
  watch_id: string;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: object[];
}

interface Watcher {
  readonly local: boolean;
  stop(): void;
}

export class WatchSession {
  private readonly call: grpc.ServerDuplexStream<Buffer, Buffer>;
  private readonly feeds: readonly PrefixFeed[];
  private readonly upstream: Upstream;
  private readonly watchers = new Map<string, Watcher>();
  private nextId = 0;
  private closed = false;
  private readonly counts: { localWatches: number; forwardedWatches: number };

  constructor(call: grpc.ServerDuplexStream<Buffer, Buffer>, feeds: readonly PrefixFeed[], upstream: Upstream, counts = { localWatches: 0, forwardedWatches: 0 }) {
    this.counts = counts;
    this.call = call;
    this.feeds = feeds;
    this.upstream = upstream;
    call.on('data', (buf: Buffer) => this.onRequest(buf));
    call.on('end', () => this.close(true));
    call.on('cancelled', () => this.close(false));
    call.on('error', () => this.close(false));
  }

  get localWatchers(): number {
    return [...this.watchers.values()].filter((w) => w.local).length;
  }

  private send(r: WatchResponse): void {
    if (!this.closed) this.call.write(WATCH.encodeResponse(r));
  }

  private close(endCall: boolean): void {
    if (this.closed) return;
    for (const w of this.watchers.values()) w.stop();
    this.watchers.clear();
    if (endCall) this.call.end();
    this.closed = true;
  }

  private headerFor(feed: PrefixFeed): ResponseHeader {
    return { ...feed.header, revision: String(feed.cache.revision) };
  }

  private onRequest(buf: Buffer): void {
    let req: WatchRequest;
    try {
      req = WATCH.decodeRequest(buf) as WatchRequest;
    } catch {
      return; // etcd ignores what it cannot parse as well
    }
    if (req.request_union === 'create_request' && req.create_request) this.create(req.create_request);
    else if (req.request_union === 'cancel_request' && req.cancel_request) this.cancel(req.cancel_request.watch_id);
    else if (req.request_union === 'progress_request') {
      const feed = this.feeds[0];
      this.send({ header: feed ? this.headerFor(feed) : undefined, watch_id: '-1' });
    }
  }

  private allocateId(requested: string): string | undefined {
    if (requested !== '0') return this.watchers.has(requested) ? undefined : requested;
    while (this.watchers.has(String(this.nextId))) this.nextId++;
    return String(this.nextId++);
  }

  private create(cr: CreateRequest): void {
    const id = this.allocateId(cr.watch_id);
    if (id === undefined) {
      this.send({ watch_id: cr.watch_id, created: true, canceled: true, cancel_reason: `watcher ID ${cr.watch_id} already in use` });
      return;
    }
    const key = cr.key.toString('latin1');
    const rangeEnd = cr.range_end.toString('latin1');
    const start = Number(cr.start_revision);
    const feed = this.feeds.find((f) => f.status === 'InSync' && f.cache.contains(key, rangeEnd));
    if (feed && (start === 0 || start > feed.cache.windowStart)) {
      this.counts.localWatches++;
      this.createLocal(id, cr, key, rangeEnd, start, feed);
    } else {
      this.counts.forwardedWatches++;
      this.createForwarded(id, cr);
    }
  }

  private createLocal(id: string, cr: CreateRequest, key: string, rangeEnd: string, start: number, feed: PrefixFeed): void {
    const noPut = cr.filters.includes('Noput');
    const noDelete = cr.filters.includes('Nodelete');
    const from = start === 0 ? feed.cache.revision + 1 : start;
    const pick = (events: readonly CacheEvent[]): object[] =>
      events
        .filter((e) => e.revision >= from && keyInRange(e.kv.key.toString('latin1'), key, rangeEnd))
        .filter((e) => !(e.type === 'Put' ? noPut : noDelete))
        .map((e) => ({ type: e.type, kv: e.kv, prev_kv: cr.prev_kv ? e.prev_kv : null }));
    this.send({ header: this.headerFor(feed), watch_id: id, created: true });
    if (start > 0) {
      const backlog = pick(feed.cache.eventsFrom(start) ?? []);
      for (let i = 0; i < backlog.length; i += REPLAY_CHUNK) {
        this.send({ header: this.headerFor(feed), watch_id: id, events: backlog.slice(i, i + REPLAY_CHUNK) });
      }
    }
    const unsubscribe = feed.cache.subscribe((batch) => {
      const events = pick(batch);
      if (events.length > 0) this.send({ header: this.headerFor(feed), watch_id: id, events });
    });
    this.watchers.set(id, { local: true, stop: unsubscribe });
  }

  private createForwarded(id: string, cr: CreateRequest): void {
    const up = this.upstream.duplex(WATCH, forwardedMetadata(this.call.metadata));
    let done = false;
    const stop = () => {
      done = true;
      up.cancel();
    };
    up.on('data', (buf: Buffer) => {
      if (done) return;
      const r = WATCH.decodeResponse(buf) as WatchResponse;
      r.watch_id = id;
      this.send(r);
      if (r.canceled) {
        stop();
        this.watchers.delete(id);
      }
    });
    up.on('error', (err) => {
      if (done) return;
      done = true;
      this.watchers.delete(id);
      this.send({ watch_id: id, canceled: true, cancel_reason: `upstream watch failed: ${errorMessage(err)}` });
    });
    up.on('end', () => {
      if (done) return;
      done = true;
      this.watchers.delete(id);
      this.send({ watch_id: id, canceled: true, cancel_reason: 'upstream watch ended' });
    });
    up.write(WATCH.encodeRequest({ create_request: { ...cr, watch_id: '0' } }));
    this.watchers.set(id, { local: false, stop });
  }

  private cancel(id: string): void {
    const w = this.watchers.get(id);
    if (!w) return;
    w.stop();
    this.watchers.delete(id);
    const feed = this.feeds[0];
    this.send({ header: feed ? this.headerFor(feed) : undefined, watch_id: id, canceled: true });
  }
}
