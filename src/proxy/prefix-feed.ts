/**
 * Keeps one PrefixCache in step with etcd over ONE upstream watch: list the prefix at revision R,
 * watch from R+1 (with progress notifications), apply every event in order; on compaction, a
 * cancelled watch or any stream error, wait a moment and list again (the cache turns the difference
 * into events). Status: WaitingForDatastore -> InSync, and Resyncing while re-listing.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { Metadata } from '@grpc/grpc-js';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { etcdMethod } from './etcd-proto.ts';
import type { EventType, KeyValue, PrefixCache } from './cache.ts';
import type { Upstream } from './upstream.ts';

export type FeedStatus = 'WaitingForDatastore' | 'Resyncing' | 'InSync';

/** etcdserverpb.ResponseHeader as decoded. */
export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: string;
  raft_term: string;
}

const RANGE = etcdMethod('KV', 'Range');
const WATCH = etcdMethod('Watch', 'Watch');

export class PrefixFeed {
  readonly cache: PrefixCache;
  status: FeedStatus = 'WaitingForDatastore';
  resyncs = 0;
  /** The last header seen from etcd: its cluster/member IDs and term go on answers from the cache. */
  header: ResponseHeader = { cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' };
  private readonly upstream: Upstream;
  private readonly log: Logger;
  private readonly retryMs: number;
  private stream: ClientDuplexStream<Buffer, Buffer> | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly syncedWaiters: Array<() => void> = [];

  constructor(cache: PrefixCache, upstream: Upstream, log: Logger, retryMs = 1_000) {
    this.cache = cache;
    this.upstream = upstream;
    this.log = log;
    this.retryMs = retryMs;
  }

  start(): void {
    void this.sync();
  }

  /** Resolves once the cache is in sync for the first time. */
  synced(): Promise<void> {
    if (this.status === 'InSync') return Promise.resolve();
    return new Promise((resolve) => this.syncedWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stream?.cancel();
    this.stream = undefined;
  }

  private setStatus(s: FeedStatus, reason: string): void {
    if (s === this.status) return;
    this.log.info(`cache ${this.cache.prefix}: ${this.status} -> ${s} (${reason})`);
    this.status = s;
    if (s === 'InSync') for (const w of this.syncedWaiters.splice(0)) w();
  }

  private retry(reason: string): void {
    if (this.stopped) return;
    this.stream?.cancel();
    this.stream = undefined;
    if (this.status === 'InSync') this.setStatus('Resyncing', reason);
    this.log.warn(`cache ${this.cache.prefix}: ${reason}; listing again in ${this.retryMs} ms`);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.sync(), this.retryMs);
  }

  private async sync(): Promise<void> {
    if (this.stopped) return;
    const prefix = Buffer.from(this.cache.prefix, 'latin1');
    const rangeEnd = Buffer.from(this.cache.end, 'latin1');
    let res: { header: ResponseHeader; kvs: KeyValue[] };
    try {
      res = await this.upstream.call(RANGE, { key: prefix, range_end: rangeEnd });
    } catch (err) {
      this.retry(`listing failed: ${errorMessage(err)}`);
      return;
    }
    if (this.stopped) return;
    const revision = Number(res.header.revision);
    this.header = res.header;
    if (this.cache.revision > 0) this.resyncs++;
    this.cache.reset(res.kvs, revision);
    this.setStatus('InSync', `listed ${res.kvs.length} keys at revision ${revision}`);
    this.watch(prefix, rangeEnd, revision + 1);
  }

  private watch(prefix: Buffer, rangeEnd: Buffer, from: number): void {
    const stream = this.upstream.duplex(WATCH, new Metadata());
    this.stream = stream;
    stream.on('data', (buf: Buffer) => {
      if (stream !== this.stream) return;
      const r = WATCH.decodeResponse(buf) as {
        header: ResponseHeader | null;
        created: boolean;
        canceled: boolean;
        compact_revision: string;
        cancel_reason: string;
        events: Array<{ type: EventType; kv: KeyValue }>;
      };
      if (r.header) this.header = r.header;
      if (r.compact_revision !== '0') return this.retry(`watch compacted at revision ${r.compact_revision}`);
      if (r.canceled) return this.retry(`watch cancelled by etcd: ${r.cancel_reason || 'no reason given'}`);
      if (r.events.length > 0) this.cache.apply(r.events);
      else if (!r.created && r.header) this.cache.advance(Number(r.header.revision));
    });
    stream.on('error', (err) => {
      if (stream === this.stream) this.retry(`watch failed: ${errorMessage(err)}`);
    });
    stream.on('end', () => {
      if (stream === this.stream) this.retry('watch ended by etcd');
    });
    stream.write(WATCH.encodeRequest({ create_request: { key: prefix, range_end: rangeEnd, start_revision: String(from), progress_notify: true } }));
  }
}
