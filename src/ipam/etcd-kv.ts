/**
 * The few etcd operations block IPAM is built from: read with mod revision, prefix list, a
 * transaction guarded by every changed key's mod revision (or its absence), and a retry loop with
 * jittered exponential backoff for lost races. Knows nothing about blocks or handles.
 */
import type { Etcd3 } from 'etcd3';
import { IpamContentionError } from './errors.ts';

export interface Kv {
  readonly value: string;
  /** mod revision */
  readonly rev: string;
}

/** A key's expected state in a transaction: its mod revision, or absent (null). */
export interface Guard {
  readonly key: string;
  readonly rev: string | null;
}

/** A put (value) or delete (null). */
export interface Write {
  readonly key: string;
  readonly value: string | null;
}

export const RETRY: unique symbol = Symbol('retry');

export interface RetryPolicy {
  /** Attempts before giving up (Calico: 100). */
  readonly maxAttempts: number;
  /** Backoff after a lost race: random in [0, min(cap, base * 2^attempt)) ms. */
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
}

export class EtcdKv {
  readonly #client: Etcd3;
  readonly #policy: RetryPolicy;

  constructor(client: Etcd3, policy: RetryPolicy) {
    this.#client = client;
    this.#policy = policy;
  }

  get maxAttempts(): number {
    return this.#policy.maxAttempts;
  }

  async get(key: string): Promise<Kv | undefined> {
    const res = await this.#client.get(key).exec();
    const kv = res.kvs[0];
    return kv ? { value: kv.value.toString(), rev: kv.mod_revision } : undefined;
  }

  /** Several keys in one round trip (one read-only transaction: a consistent snapshot). */
  async getMany(keys: readonly string[]): Promise<Array<Kv | undefined>> {
    if (keys.length === 0) return [];
    if (keys.length === 1) return [await this.get(keys[0]!)];
    const res = await this.#client.kv.txn({ compare: [], success: keys.map((k) => ({ request_range: { key: Buffer.from(k) } })) });
    return res.responses.map((r) => {
      const kv = r.response_range?.kvs[0];
      return kv ? { value: kv.value.toString(), rev: kv.mod_revision } : undefined;
    });
  }

  async list(prefix: string, keysOnly = false): Promise<Array<{ key: string } & Kv>> {
    const b = this.#client.getAll().prefix(prefix);
    if (keysOnly) b.keys();
    const res = await b.exec();
    return res.kvs.map((kv) => ({ key: kv.key.toString(), value: keysOnly ? '' : kv.value.toString(), rev: kv.mod_revision }));
  }

  /** One transaction: when every guard holds, apply the writes. True when it did. */
  async txn(guards: readonly Guard[], writes: readonly Write[]): Promise<boolean> {
    const [first, ...rest] = guards;
    if (!first) throw new Error('ipam: a transaction needs at least one guard');
    const cmp = (g: Guard) => [g.key, g.rev === null ? 'Create' : 'Mod', '==', g.rev === null ? 0 : g.rev] as const;
    const b = this.#client.if(...cmp(first));
    for (const g of rest) b.and(...cmp(g));
    b.then(...writes.map((w) => (w.value === null ? this.#client.delete().key(w.key) : this.#client.put(w.key).value(w.value))));
    return (await b.commit()).succeeded;
  }

  /** Runs `attempt` until it returns something other than RETRY, backing off between tries. */
  async retry<T>(what: string, attempt: () => Promise<T | typeof RETRY>): Promise<T> {
    const { maxAttempts, backoffBaseMs, backoffCapMs } = this.#policy;
    for (let i = 0; i < maxAttempts; i++) {
      const r = await attempt();
      if (r !== RETRY) return r;
      const delay = Math.random() * Math.min(backoffCapMs, backoffBaseMs * 2 ** Math.min(i, 10));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    throw new IpamContentionError(`${what}: lost the compare-and-swap race ${maxAttempts} times; the datastore is too contended, try again`);
  }
}
