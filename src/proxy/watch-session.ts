/**
 * One client's etcd Watch stream on the proxy. Each watcher it creates is either local (its range
 * lies in a cached prefix and its start revision is still in the cache's window: served from the
 * cache's event stream, sharing the cache's one upstream watch) or forwarded (its own upstream
 * watch, with watch IDs rewritten, resumed on another member from its next revision if the member
 * it used fails). A client that stops reading is cut off once its unsent backlog passes the limit:
 * its watchers stop and the stream ends with UNAVAILABLE, which etcd clients answer by
 * reconnecting and resuming from their last revision. Owns its watchers; never changes the cache.
 */
import * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
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
  header?: ResponseHeader | null;
  watch_id: string;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: Array<{ kv?: { mod_revision: string } | null }>;
}

/** Counters the session keeps up to date for the proxy's metrics. */
export interface WatchCounters {
  localWatches: number;
  forwardedWatches: number;
  /** Forwarded watchers currently open (each is one upstream watch stream). */
  forwardedOpen: number;
  forwardedResumes: number;
  slowCutoffs: number;
  bytesToClients: number;
}

export interface WatchSessionOptions {
  readonly feeds: readonly PrefixFeed[];
  readonly upstream: Upstream;
  readonly counters: WatchCounters;
  readonly log: Logger;
  /** Unsent bytes after which the client is cut off. */
  readonly maxBacklogBytes: number;
}

/** Per cache batch, the encoded response for each watcher shape (null: nothing for that shape). */
const encodings = new WeakMap<readonly CacheEvent[], Map<string, Buffer | null>>();

function sharedEncodings(batch: readonly CacheEvent[]): Map<string, Buffer | null> {
  let m = encodings.get(batch);
  if (!m) {
    m = new Map();
    encodings.set(batch, m);
  }
  return m;
}

/** WatchResponse field 2 (watch_id, int64) on its own, as protobuf bytes. */
function watchIdField(id: string): Buffer {
  const bytes = [0x10];
  let v = BigInt.asUintN(64, BigInt(id));
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    bytes.push(b);
  } while (v > 0n);
  return Buffer.from(bytes);
}

interface Watcher {
  readonly local: boolean;
  stop(): void;
}

export class WatchSession {
  private readonly call: grpc.ServerDuplexStream<Buffer, Buffer>;
  private readonly opts: WatchSessionOptions;
  private readonly watchers = new Map<string, Watcher>();
  private nextId = 0;
  private closed = false;
  /** Bytes written since the stream last drained: what the client has not taken yet. */
  private backlog = 0;

  constructor(call: grpc.ServerDuplexStream<Buffer, Buffer>, opts: WatchSessionOptions) {
    this.call = call;
    this.opts = opts;
    call.on('data', (buf: Buffer) => this.onRequest(buf));
    call.on('drain', () => (this.backlog = 0));
    call.on('end', () => this.close(true));
    call.on('cancelled', () => this.close(false));
    call.on('error', () => this.close(false));
  }

  private send(r: WatchResponse): void {
    if (!this.closed) this.sendBytes(WATCH.encodeResponse(r));
  }

  private sendBytes(buf: Buffer): void {
    if (this.closed) return;
    this.opts.counters.bytesToClients += buf.length;
    if (this.call.write(buf)) return;
    this.backlog += buf.length;
    if (this.backlog > this.opts.maxBacklogBytes) this.cutOff();
  }

  private cutOff(): void {
    const limit = this.opts.maxBacklogBytes;
    const mib = (limit / 2 ** 20).toFixed(limit < 2 ** 20 ? 2 : 0);
    this.opts.counters.slowCutoffs++;
    this.opts.log.warn(`watch client ${this.call.getPeer()} is not reading (over ${mib} MiB unsent): ending its stream; it will resume from its last revision`);
    this.stopWatchers();
    this.closed = true;
    this.call.emit('error', { code: grpc.status.UNAVAILABLE, details: `routecat proxy: watch stream fell more than ${mib} MiB behind; reconnect and resume` });
  }

  private stopWatchers(): void {
    for (const w of this.watchers.values()) w.stop();
    this.watchers.clear();
  }

  private close(endCall: boolean): void {
    if (this.closed) return;
    this.stopWatchers();
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
      const feed = this.opts.feeds[0];
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
    const feed = this.opts.feeds.find((f) => f.serving && f.cache.contains(key, rangeEnd));
    if (feed && (start === 0 || start > feed.cache.windowStart)) {
      this.opts.counters.localWatches++;
      this.createLocal(id, cr, key, rangeEnd, start, feed);
    } else {
      this.opts.counters.forwardedWatches++;
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
      for (let i = 0; i < backlog.length && !this.closed; i += REPLAY_CHUNK) {
        this.send({ header: this.headerFor(feed), watch_id: id, events: backlog.slice(i, i + REPLAY_CHUNK) });
      }
    }
    if (this.closed) return;
    // Watchers with the same range and options get the same events: encode them once per batch
    // and give each watcher its own watch_id in front (protobuf merges concatenated messages).
    const baseShape = `${key}\0${rangeEnd}\0${cr.prev_kv}\0${noPut}\0${noDelete}`;
    const idField = watchIdField(id);
    const unsubscribe = feed.cache.subscribe((batch) => {
      // The start revision only matters for a batch that begins before it.
      const shape = batch.length > 0 && batch[0]!.revision < from ? `${baseShape}\0${from}` : baseShape;
      let encoded = sharedEncodings(batch).get(shape);
      if (encoded === undefined) {
        const events = pick(batch);
        encoded = events.length > 0 ? WATCH.encodeResponse({ header: this.headerFor(feed), events }) : null;
        sharedEncodings(batch).set(shape, encoded);
      }
      if (encoded) this.sendBytes(Buffer.concat([idField, encoded]));
    });
    this.watchers.set(id, { local: true, stop: unsubscribe });
  }

  /**
   * A watcher the cache cannot serve: its own upstream watch. If the member fails, the watch is
   * made again on the next member from the revision after the last one the client was sent (or
   * was told about by a progress notification), so the client sees neither gap nor repeat.
   */
  private createForwarded(id: string, cr: CreateRequest): void {
    const { counters, upstream } = this.opts;
    let next = Number(cr.start_revision); // 0 until etcd says where "now" is
    let created = false;
    let done = false;
    let attempt = 0;
    let current: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
    let timer: NodeJS.Timeout | undefined;
    counters.forwardedOpen++;
    const finish = () => {
      if (done) return;
      done = true;
      counters.forwardedOpen--;
      clearTimeout(timer);
      current?.cancel();
      this.watchers.delete(id);
    };
    const open = () => {
      if (done || this.closed) return;
      const { stream, member } = upstream.duplex(WATCH, forwardedMetadata(this.call.metadata));
      current = stream;
      stream.on('data', (buf: Buffer) => {
        if (done || stream !== current) return;
        const r = WATCH.decodeResponse(buf) as WatchResponse;
        r.watch_id = id;
        attempt = 0;
        if (r.created && !r.canceled) {
          if (next === 0 && r.header) next = Number(r.header.revision) + 1;
          if (created) return; // a resumed watch: the client already has its "created"
          created = true;
        }
        const events = r.events ?? [];
        if (events.length > 0) next = Number(events[events.length - 1]!.kv?.mod_revision ?? next - 1) + 1;
        else if (!r.created && !r.canceled && r.header) next = Math.max(next, Number(r.header.revision) + 1);
        this.send(r);
        if (r.canceled) finish();
      });
      const broken = (err: unknown, what: string) => {
        if (done || stream !== current) return;
        current = undefined; // its 'end' after this 'error' is the same failure
        stream.cancel();
        upstream.failed(member, err as { code?: number });
        if (!created && next === 0) {
          // Never got going: tell the client as etcd would have.
          this.send({ watch_id: id, created: true, canceled: true, cancel_reason: `${what}: ${errorMessage(err)}` });
          finish();
          return;
        }
        counters.forwardedResumes++;
        const delay = Math.min(1_000, 100 * 2 ** attempt++);
        this.opts.log.warn(`forwarded watch ${id} of ${this.call.getPeer()}: ${what} (${errorMessage(err)}); resuming from revision ${next} on ${upstream.target} in ${delay} ms`);
        timer = setTimeout(open, delay);
      };
      stream.on('error', (err) => broken(err, `upstream watch on ${member.target} failed`));
      stream.on('end', () => broken(new Error('ended by etcd'), `upstream watch on ${member.target} ended`));
      stream.write(WATCH.encodeRequest({ create_request: { ...cr, watch_id: '0', start_revision: String(next) } }));
    };
    this.watchers.set(id, { local: false, stop: finish });
    open();
  }

  private cancel(id: string): void {
    const w = this.watchers.get(id);
    if (!w) return;
    w.stop();
    this.watchers.delete(id);
    const feed = this.opts.feeds[0];
    this.send({ header: feed ? this.headerFor(feed) : undefined, watch_id: id, canceled: true });
  }
}
