/**
 * Keeps one PrefixCache in step with etcd over ONE upstream watch: list the prefix at revision R,
 * watch from R+1 (with progress notifications), apply every event in order. When the watch breaks
 * (a member stopped, the network went), it moves to the next member and resumes from the cache's
 * revision + 1, so no event is lost or repeated; only a compaction past that revision makes it
 * list again (the cache turns the difference into events). Meanwhile the cache keeps answering.
 *
 * It also answers "has the cache seen revision r yet?" (waitForRevision), asking etcd for a
 * progress notification when events alone don't say, and fetches read indexes for linearizable
 * reads (one cluster round trip shared by the reads that arrive while it is out).
 *
 * Status: WaitingForDatastore (never listed) -> InSync; Reconnecting while the watch is down.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { etcdMethod } from './etcd-proto.ts';
import type { EventType, KeyValue, PrefixCache } from './cache.ts';
import type { MemberLease, Upstream } from './upstream.ts';

export type FeedStatus = 'WaitingForDatastore' | 'Reconnecting' | 'InSync';

/** etcdserverpb.ResponseHeader as decoded. */
export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: string;
  raft_term: string;
}

const RANGE = etcdMethod('KV', 'Range');
const WATCH = etcdMethod('Watch', 'Watch');
/** A progress request etcd ignored (its watcher was still catching up) is re-sent after this. */
const PROGRESS_RETRY_MS = 200;

interface RevisionWaiter {
  readonly revision: number;
  readonly resolve: (reached: boolean) => void;
  readonly timer: NodeJS.Timeout;
}

export class PrefixFeed {
  readonly cache: PrefixCache;
  status: FeedStatus = 'WaitingForDatastore';
  /** Full re-lists after the first (compaction overtook the cache). */
  resyncs = 0;
  /** Watches resumed from the cache's revision after the upstream watch broke. */
  resumes = 0;
  /** The last header seen from etcd: its cluster/member IDs and term go on answers from the cache. */
  header: ResponseHeader = { cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' };
  private readonly upstream: Upstream;
  private readonly log: Logger;
  private readonly retryMs: number;
  private stream: ClientDuplexStream<Buffer, Buffer> | undefined;
  private watching = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private failuresInARow = 0;
  private readonly syncedWaiters: Array<() => void> = [];
  private revisionWaiters: RevisionWaiter[] = [];
  private progressAskedAt = 0;
  private progressTimer: NodeJS.Timeout | undefined;
  private readIndexInFlight: Promise<number> | undefined;
  private readIndexNext: Promise<number> | undefined;

  constructor(cache: PrefixCache, upstream: Upstream, log: Logger, retryMs = 1_000) {
    this.cache = cache;
    this.upstream = upstream;
    this.log = log;
    this.retryMs = retryMs;
  }

  /** Has the cache been listed at least once (so it may answer, possibly a little behind)? */
  get serving(): boolean {
    return this.cache.revision > 0;
  }

  /** Is the upstream watch established right now? */
  get connected(): boolean {
    return this.watching;
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
    clearTimeout(this.progressTimer);
    this.stream?.cancel();
    this.stream = undefined;
    this.watching = false;
    for (const w of this.revisionWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  /**
   * Resolves true once the cache reflects revision `revision` (every event up to it applied, or
   * etcd confirmed there were none), false after `timeoutMs`.
   */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.cache.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: RevisionWaiter = {
        revision,
        resolve,
        timer: setTimeout(() => {
          this.revisionWaiters = this.revisionWaiters.filter((w) => w !== waiter);
          resolve(false);
        }, timeoutMs),
      };
      this.revisionWaiters.push(waiter);
      this.askProgress();
    });
  }

  /**
   * A write outside this prefix made revision `revision`: if the cache has everything up to the
   * revision before it, nothing under the prefix changed at it either, so the cache is at it.
   */
  unchangedAt(revision: number): void {
    if (this.cache.revision !== revision - 1) return;
    this.cache.advance(revision);
    this.settleWaiters();
  }

  /**
   * The cluster's current revision, read linearizably: a read that arrives now and is answered
   * from the cache once the cache has reached this revision sees every write acknowledged before
   * it arrived. Reads arriving while a request is out share the next one (not the one already
   * out, which may predate them).
   */
  readIndex(): Promise<number> {
    if (!this.readIndexInFlight) {
      this.readIndexInFlight = this.fetchRevision().finally(() => (this.readIndexInFlight = undefined));
      return this.readIndexInFlight;
    }
    this.readIndexNext ??= this.readIndexInFlight
      .catch(() => undefined)
      .then(() => {
        this.readIndexNext = undefined;
        return this.readIndex();
      });
    return this.readIndexNext;
  }

  private async fetchRevision(): Promise<number> {
    const key = Buffer.from(this.cache.prefix, 'latin1');
    const res = await this.upstream.call<{ header: ResponseHeader }>(RANGE, { key, count_only: true }, 5_000);
    return Number(res.header.revision);
  }

  /** Settles the waiters the cache has now reached; asks for progress if some still wait. */
  private settleWaiters(): void {
    if (this.revisionWaiters.length === 0) return;
    const still: RevisionWaiter[] = [];
    for (const w of this.revisionWaiters) {
      if (this.cache.revision >= w.revision) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else still.push(w);
    }
    this.revisionWaiters = still;
    if (still.length > 0) this.askProgress();
  }

  /**
   * Asks etcd, on the feed's own watch stream, for a progress notification: its answer carries the
   * revision up to which every event has been sent. One request out at a time.
   */
  private askProgress(): void {
    if (!this.stream || !this.watching || this.progressTimer) return;
    const since = Date.now() - this.progressAskedAt;
    const send = () => {
      this.progressTimer = undefined;
      if (!this.stream || !this.watching || this.revisionWaiters.length === 0) return;
      this.progressAskedAt = Date.now();
      this.stream.write(WATCH.encodeRequest({ progress_request: {} }));
      // etcd drops the request while the watcher is catching up: ask again if nothing came.
      this.progressTimer = setTimeout(() => {
        this.progressTimer = undefined;
        if (this.revisionWaiters.length > 0) this.askProgress();
      }, PROGRESS_RETRY_MS);
    };
    // Answered requests are re-asked at once, but never more than one per few milliseconds.
    if (since >= 5) send();
    else this.progressTimer = setTimeout(send, 5 - since);
  }

  private progressAnswered(): void {
    clearTimeout(this.progressTimer);
    this.progressTimer = undefined;
    this.settleWaiters();
  }

  private setStatus(s: FeedStatus, reason: string): void {
    if (s === this.status) return;
    const log = s === 'InSync' ? this.log.info : this.log.warn;
    log(`cache ${this.cache.prefix}: ${this.status} -> ${s} (${reason})`);
    this.status = s;
    if (s === 'InSync') for (const w of this.syncedWaiters.splice(0)) w();
  }

  private dropStream(): void {
    this.stream?.cancel();
    this.stream = undefined;
    this.watching = false;
    clearTimeout(this.progressTimer);
    this.progressTimer = undefined;
  }

  /** Retries after a delay growing from 100 ms to retryMs while failures repeat. */
  private later(what: () => void): number {
    const delay = Math.min(this.retryMs, 100 * 2 ** Math.min(this.failuresInARow, 10));
    this.failuresInARow++;
    clearTimeout(this.timer);
    this.timer = setTimeout(what, delay);
    return delay;
  }

  /** Lists again from scratch (first start, compaction, or a watch etcd cancelled). */
  private relist(reason: string): void {
    if (this.stopped) return;
    this.dropStream();
    if (this.status === 'InSync') this.setStatus('Reconnecting', reason);
    const delay = this.later(() => void this.sync());
    this.log.warn(`cache ${this.cache.prefix}: ${reason}; listing again in ${delay} ms`);
  }

  /** The watch broke: resume it on the next member from the cache's revision. */
  private resume(member: MemberLease, err: unknown, reason: string): void {
    if (this.stopped) return;
    this.dropStream();
    this.upstream.failed(member, err as { code?: number });
    this.setStatus('Reconnecting', reason);
    this.resumes++;
    const delay = this.later(() => this.watch(this.cache.revision + 1));
    this.log.warn(`cache ${this.cache.prefix}: ${reason}; resuming from revision ${this.cache.revision + 1} on ${this.upstream.target} in ${delay} ms`);
  }

  private async sync(): Promise<void> {
    if (this.stopped) return;
    const prefix = Buffer.from(this.cache.prefix, 'latin1');
    const rangeEnd = Buffer.from(this.cache.end, 'latin1');
    let res: { header: ResponseHeader; kvs: KeyValue[] };
    try {
      res = await this.upstream.call(RANGE, { key: prefix, range_end: rangeEnd });
    } catch (err) {
      this.relist(`listing from ${this.upstream.target} failed: ${errorMessage(err)}`);
      return;
    }
    if (this.stopped) return;
    const revision = Number(res.header.revision);
    this.header = res.header;
    if (this.cache.revision > 0) this.resyncs++;
    this.cache.reset(res.kvs, revision);
    this.watch(revision + 1);
  }

  private watch(from: number): void {
    if (this.stopped) return;
    const prefix = Buffer.from(this.cache.prefix, 'latin1');
    const rangeEnd = Buffer.from(this.cache.end, 'latin1');
    void this.upstream.ownMetadata().then(
      (metadata) => {
        if (this.stopped) return;
        const { stream, member } = this.upstream.duplex(WATCH, metadata);
        this.stream = stream;
        stream.on('data', (buf: Buffer) => {
          if (stream === this.stream) this.onWatchResponse(buf, from);
        });
        stream.on('error', (err) => {
          if (stream === this.stream) this.resume(member, err, `watch on ${member.target} failed: ${errorMessage(err)}`);
        });
        stream.on('end', () => {
          if (stream === this.stream) this.resume(member, undefined, `watch on ${member.target} ended`);
        });
        stream.write(WATCH.encodeRequest({ create_request: { key: prefix, range_end: rangeEnd, start_revision: String(from), progress_notify: true } }));
      },
      (err) => this.relist(`cannot log in to etcd: ${errorMessage(err)}`),
    );
  }

  private onWatchResponse(buf: Buffer, from: number): void {
    const r = WATCH.decodeResponse(buf) as {
      header: ResponseHeader | null;
      created: boolean;
      canceled: boolean;
      compact_revision: string;
      cancel_reason: string;
      events: Array<{ type: EventType; kv: KeyValue }>;
    };
    if (r.header) this.header = r.header;
    if (r.compact_revision !== '0') return this.relist(`watch from revision ${from} compacted at revision ${r.compact_revision}`);
    if (r.canceled) return this.relist(`watch cancelled by etcd: ${r.cancel_reason || 'no reason given'}`);
    if (r.created) {
      this.watching = true;
      this.failuresInARow = 0;
      this.setStatus('InSync', `watching ${this.upstream.target} from revision ${from}`);
      this.settleWaiters();
      return;
    }
    if (r.events.length > 0) {
      this.cache.apply(r.events);
      this.settleWaiters();
    } else if (r.header) {
      // A progress notification: nothing else under the prefix up to this revision.
      this.cache.advance(Number(r.header.revision));
      this.progressAnswered();
    }
  }
}
