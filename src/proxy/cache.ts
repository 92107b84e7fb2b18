/**
 * The proxy's cache of one key prefix: every key under it at one revision, and a window of the
 * most recent events (etcd's order, with prev_kv filled in from the cache's own previous value).
 * Pure data: fed by prefix-feed.ts, read by the KV and Watch handlers. Never talks to etcd.
 *
 * Keys are held as latin1 strings so that string order is etcd's byte order.
 */

/** mvccpb.KeyValue as decoded by etcd-proto.ts (int64 fields as decimal strings). */
export interface KeyValue {
  key: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  value: Buffer;
  lease: string;
}

export type EventType = 'Put' | 'Delete';

/** mvccpb.Event; prev_kv is always filled when the key existed (the watcher decides to send it). */
export interface CacheEvent {
  readonly type: EventType;
  readonly kv: KeyValue;
  readonly prev_kv: KeyValue | null;
  /** The event's revision (kv.mod_revision as a number). */
  readonly revision: number;
}

export interface RangeQuery {
  /** Bytes as latin1; rangeEnd '' means the single key, '\0' means every key >= key. */
  readonly key: string;
  readonly rangeEnd: string;
  readonly limit: number;
  readonly keysOnly: boolean;
  readonly countOnly: boolean;
}

export interface RangeResult {
  readonly kvs: KeyValue[];
  readonly count: number;
  readonly more: boolean;
}

export type Listener = (batch: readonly CacheEvent[]) => void;

const k = (b: Buffer): string => b.toString('latin1');

/** The first key after every key that starts with prefix ('\0' when there is none). */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'latin1');
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const out = bytes.subarray(0, i + 1);
      out[i]! += 1;
      return out.toString('latin1');
    }
  }
  return '\0';
}

/** Does [key, rangeEnd) (etcd's range convention) fall entirely inside [lo, hi)? */
export function rangeWithin(key: string, rangeEnd: string, lo: string, hi: string): boolean {
  if (key < lo || (hi !== '\0' && key >= hi)) return false;
  if (rangeEnd === '') return true;
  if (rangeEnd === '\0') return hi === '\0';
  return hi === '\0' || rangeEnd <= hi;
}

/** Does [key, rangeEnd) (etcd's range convention) share any key with [lo, hi)? */
export function rangeOverlaps(key: string, rangeEnd: string, lo: string, hi: string): boolean {
  const startsBeforeHi = hi === '\0' || key < hi;
  if (rangeEnd === '') return key >= lo && startsBeforeHi;
  if (rangeEnd === '\0') return startsBeforeHi;
  return startsBeforeHi && rangeEnd > lo;
}

/** Is key inside [from, rangeEnd) (etcd's range convention)? */
export function keyInRange(key: string, from: string, rangeEnd: string): boolean {
  if (rangeEnd === '') return key === from;
  if (key < from) return false;
  return rangeEnd === '\0' || key < rangeEnd;
}

export class PrefixCache {
  readonly prefix: string;
  readonly end: string;
  readonly windowSize: number;
  /** The revision the cache reflects (0 until the first list). */
  revision = 0;
  /** Every event with a revision above this one is in the window. */
  windowStart = 0;
  private readonly kvs = new Map<string, KeyValue>();
  private sorted: string[] | undefined;
  private window: CacheEvent[] = [];
  private readonly listeners = new Set<Listener>();

  constructor(prefix: string, windowSize = 10_000) {
    this.prefix = prefix;
    this.end = prefixEnd(prefix);
    this.windowSize = windowSize;
  }

  get size(): number {
    return this.kvs.size;
  }

  contains(key: string, rangeEnd: string): boolean {
    return rangeWithin(key, rangeEnd, this.prefix, this.end);
  }

  /**
   * Replaces the contents with a fresh list at `revision`. On a re-list the differences are
   * emitted as events at that revision (deletes for vanished keys, puts for new or changed ones)
   * and the window restarts there: older history is no longer known.
   */
  reset(list: readonly KeyValue[], revision: number): CacheEvent[] {
    const fresh = new Map(list.map((kv) => [k(kv.key), kv] as const));
    const diff: CacheEvent[] = [];
    if (this.revision > 0) {
      for (const [key, old] of this.kvs) {
        if (!fresh.has(key)) diff.push({ type: 'Delete', kv: tombstone(old.key, revision), prev_kv: old, revision });
      }
      for (const [key, kv] of fresh) {
        const old = this.kvs.get(key);
        if (!old || old.mod_revision !== kv.mod_revision) diff.push({ type: 'Put', kv, prev_kv: old ?? null, revision });
      }
    }
    this.kvs.clear();
    for (const [key, kv] of fresh) this.kvs.set(key, kv);
    this.sorted = undefined;
    this.revision = revision;
    this.window = [];
    this.windowStart = revision;
    if (diff.length > 0) this.emit(diff);
    return diff;
  }

  /** Applies one upstream watch response's events (already in etcd's order). */
  apply(events: ReadonlyArray<{ type: EventType; kv: KeyValue }>): CacheEvent[] {
    const out: CacheEvent[] = [];
    for (const e of events) {
      const key = k(e.kv.key);
      const revision = Number(e.kv.mod_revision);
      if (revision <= this.revision) continue; // already reflected (a re-list raced the watch)
      const prev = this.kvs.get(key) ?? null;
      if (e.type === 'Put') {
        if (!prev) this.sorted = undefined;
        this.kvs.set(key, e.kv);
      } else {
        if (prev) this.sorted = undefined;
        this.kvs.delete(key);
      }
      out.push({ type: e.type, kv: e.kv, prev_kv: prev, revision });
    }
    if (out.length === 0) return out;
    const last = out[out.length - 1]!.revision;
    this.window.push(...out);
    this.trimWindow();
    this.revision = Math.max(this.revision, last);
    this.emit(out);
    return out;
  }

  /** A progress notification: nothing changed under the prefix up to `revision`. */
  advance(revision: number): void {
    if (revision > this.revision) this.revision = revision;
  }

  range(q: RangeQuery): RangeResult {
    const keys = this.sortedKeys();
    let i = lowerBound(keys, q.key);
    const matched: KeyValue[] = [];
    let count = 0;
    for (; i < keys.length; i++) {
      const key = keys[i]!;
      if (!keyInRange(key, q.key, q.rangeEnd)) break;
      count++;
      if (q.countOnly) continue;
      if (q.limit > 0 && matched.length >= q.limit) continue;
      const kv = this.kvs.get(key)!;
      matched.push(q.keysOnly ? { ...kv, value: Buffer.alloc(0) } : kv);
    }
    return { kvs: matched, count, more: q.limit > 0 && count > q.limit && !q.countOnly };
  }

  /** The events with revision >= startRevision, or undefined when the window no longer has them all. */
  eventsFrom(startRevision: number): CacheEvent[] | undefined {
    if (startRevision <= this.windowStart) return undefined;
    return this.window.filter((e) => e.revision >= startRevision);
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(batch: readonly CacheEvent[]): void {
    for (const l of [...this.listeners]) l(batch);
  }

  private trimWindow(): void {
    const excess = this.window.length - this.windowSize;
    if (excess <= 0) return;
    // Evicting part of a revision's events makes that whole revision unservable.
    this.windowStart = Math.max(this.windowStart, this.window[excess - 1]!.revision);
    this.window = this.window.slice(excess);
  }

  private sortedKeys(): string[] {
    if (!this.sorted) this.sorted = [...this.kvs.keys()].sort();
    return this.sorted;
  }
}

function tombstone(key: Buffer, revision: number): KeyValue {
  return { key, create_revision: '0', mod_revision: String(revision), version: '0', value: Buffer.alloc(0), lease: '0' };
}

function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
