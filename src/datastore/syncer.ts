/**
 * The watch cache every long-running role consumes: list a prefix, then watch from the list's
 * revision + 1. On compaction, a lost connection or any watch error it lists again, emits the
 * differences (including synthetic deletes for keys that vanished meanwhile) and watches again.
 * Status goes WaitingForDatastore -> ResyncInProgress -> InSync, and never InSync before a
 * complete list has been delivered.
 */
import type { Etcd3, Watcher } from 'etcd3';
import { errorMessage } from '../errors.ts';

export const SyncStatus = {
  WaitingForDatastore: 'WaitingForDatastore',
  ResyncInProgress: 'ResyncInProgress',
  InSync: 'InSync',
} as const;
export type SyncStatus = (typeof SyncStatus)[keyof typeof SyncStatus];

export interface SyncUpdate {
  readonly key: string;
  /** The value as text; null when the key was deleted. */
  readonly value: string | null;
  /** etcd ModRevision of the value (of the deletion for deletes). */
  readonly revision: string;
}

export interface SyncerHandlers {
  /** A batch of updates; within a batch, at most one update per key. */
  onUpdates(updates: readonly SyncUpdate[]): void;
  onStatus?(status: SyncStatus): void;
  /** Something went wrong and the syncer is recovering (logged by the caller). */
  onError?(message: string): void;
}

export interface SyncerOptions {
  /** Delay before retrying a failed list (doubles up to maxRetryMs). */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
  /** Test hook: runs between a list and the watch that follows it (to force a compaction there). */
  readonly beforeWatch?: () => Promise<void>;
}

interface CacheEntry {
  value: string;
  revision: string;
}

export class WatcherSyncer {
  readonly #client: Etcd3;
  readonly #prefix: string;
  readonly #handlers: SyncerHandlers;
  readonly #retryMs: number;
  readonly #maxRetryMs: number;
  readonly #beforeWatch: (() => Promise<void>) | undefined;
  readonly #cache = new Map<string, CacheEntry>();
  #status: SyncStatus = SyncStatus.WaitingForDatastore;
  #watcher: Watcher | undefined;
  #stopped = true;
  #generation = 0;
  #timer: NodeJS.Timeout | undefined;
  #resyncs = 0;

  constructor(client: Etcd3, prefix: string, handlers: SyncerHandlers, options: SyncerOptions = {}) {
    this.#client = client;
    this.#prefix = prefix;
    this.#handlers = handlers;
    this.#retryMs = options.retryMs ?? 200;
    this.#maxRetryMs = options.maxRetryMs ?? 5_000;
    this.#beforeWatch = options.beforeWatch;
  }

  get status(): SyncStatus {
    return this.#status;
  }

  /** How many times a full list has completed (1 after the first sync). */
  get resyncCount(): number {
    return this.#resyncs;
  }

  /** The syncer's current view: key -> value. */
  snapshot(): Map<string, string> {
    return new Map([...this.#cache].map(([k, e]) => [k, e.value]));
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#resync(this.#retryMs);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#generation++;
    if (this.#timer) clearTimeout(this.#timer);
    const w = this.#watcher;
    this.#watcher = undefined;
    if (w) await w.cancel().catch(() => {});
  }

  #setStatus(s: SyncStatus): void {
    if (this.#status === s) return;
    this.#status = s;
    this.#handlers.onStatus?.(s);
  }

  #emit(updates: SyncUpdate[]): void {
    if (updates.length > 0) this.#handlers.onUpdates(updates);
  }

  /** Drops the current watch (if any) and lists again; retries with backoff until it works. */
  async #resync(delay: number): Promise<void> {
    const gen = ++this.#generation;
    const old = this.#watcher;
    this.#watcher = undefined;
    if (old) void old.cancel().catch(() => {});
    if (this.#status === SyncStatus.InSync) this.#setStatus(SyncStatus.ResyncInProgress);
    let revision: string;
    try {
      const res = await this.#client.getAll().prefix(this.#prefix).exec();
      if (gen !== this.#generation) return;
      revision = res.header.revision;
      this.#setStatus(SyncStatus.ResyncInProgress);
      const seen = new Set<string>();
      const updates: SyncUpdate[] = [];
      for (const kv of res.kvs) {
        const key = kv.key.toString('utf8');
        const value = kv.value.toString('utf8');
        seen.add(key);
        const cur = this.#cache.get(key);
        if (cur && cur.value === value && cur.revision === kv.mod_revision) continue;
        this.#cache.set(key, { value, revision: kv.mod_revision });
        updates.push({ key, value, revision: kv.mod_revision });
      }
      for (const key of [...this.#cache.keys()]) {
        if (seen.has(key)) continue;
        this.#cache.delete(key);
        updates.push({ key, value: null, revision });
      }
      this.#emit(updates);
    } catch (err) {
      if (gen !== this.#generation || this.#stopped) return;
      this.#handlers.onError?.(`listing ${this.#prefix} failed: ${errorMessage(err)}; retrying in ${delay} ms`);
      if (this.#status !== SyncStatus.InSync) this.#setStatus(SyncStatus.WaitingForDatastore);
      this.#timer = setTimeout(() => void this.#resync(Math.min(delay * 2, this.#maxRetryMs)), delay);
      return;
    }
    this.#resyncs++;
    this.#setStatus(SyncStatus.InSync);
    if (this.#beforeWatch) await this.#beforeWatch().catch(() => {});
    await this.#watch(gen, revision);
  }

  async #watch(gen: number, listRevision: string): Promise<void> {
    const restart = (why: string) => {
      if (gen !== this.#generation || this.#stopped) return;
      this.#handlers.onError?.(`watch on ${this.#prefix} lost (${why}); re-listing`);
      void this.#resync(this.#retryMs);
    };
    const builder = this.#client.watch().prefix(this.#prefix).startRevision(String(BigInt(listRevision) + 1n));
    const watcher = builder.watcher();
    this.#watcher = watcher;
    watcher.on('data', (res) => {
      if (gen !== this.#generation) return;
      const batch = new Map<string, SyncUpdate>();
      for (const ev of res.events) {
        const key = ev.kv.key.toString('utf8');
        if (ev.type === 'Delete') {
          if (!this.#cache.has(key)) continue;
          this.#cache.delete(key);
          batch.set(key, { key, value: null, revision: ev.kv.mod_revision });
        } else {
          const value = ev.kv.value.toString('utf8');
          this.#cache.set(key, { value, revision: ev.kv.mod_revision });
          batch.set(key, { key, value, revision: ev.kv.mod_revision });
        }
      }
      this.#emit([...batch.values()]);
    });
    watcher.on('disconnected', (err: unknown) => restart(`disconnected: ${errorMessage(err)}`));
    watcher.on('error', (err: unknown) => restart(errorMessage(err)));
  }
}
