/**
 * v3 resources in etcd, with calicoctl's write semantics:
 *  - create = put-if-absent (compare CreateRevision == 0), sets uid and creationTimestamp;
 *  - update / delete = compare-and-swap on ModRevision, which is metadata.resourceVersion;
 *  - apply = create or update, and no write at all when nothing changed.
 * Values are the resource as JSON without resourceVersion (etcd owns that number).
 */
import { randomUUID } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { AlreadyExistsError, ConflictError, NotFoundError, RoutecatError } from '../errors.ts';
import { lookupKind, type KindInfo } from '../model/kinds.ts';
import type { Resource } from '../model/resource.ts';
import { kindPrefix, resourceKey } from './keys.ts';

export type ApplyAction = 'created' | 'updated' | 'unchanged';

export interface BadData {
  readonly key: string;
  readonly reason: string;
}

export interface ResourceStoreOptions {
  /** Called for every value in etcd that cannot be decoded; the value is skipped. */
  readonly onBadData?: (bad: BadData) => void;
}

interface RawKv {
  key: Buffer;
  value: Buffer;
  mod_revision: string;
}

/** JSON with object keys sorted, so equal resources serialise equally. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) => {
    if (val && typeof val === 'object' && !Array.isArray(val)) {
      const o = val as Record<string, unknown>;
      return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
    }
    return val;
  });
}

function kindOf(r: Resource): KindInfo {
  const k = lookupKind(r.kind);
  if (!k) throw new RoutecatError('E_KIND', `unknown kind '${r.kind}'`);
  return k;
}

function describe(k: KindInfo, name: string, ns?: string): string {
  return k.namespaced ? `${k.kind} '${ns}/${name}'` : `${k.kind} '${name}'`;
}

/** What is stored: the resource minus resourceVersion. */
function storedForm(r: Resource): Resource {
  const { resourceVersion: _rv, ...metadata } = r.metadata;
  return { ...r, metadata };
}

export function decodeResource(key: string, value: Buffer | string, modRevision: string): Resource {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof value === 'string' ? value : value.toString('utf8'));
  } catch (err) {
    throw new RoutecatError('E_BAD_DATA', `value at ${key} is not JSON: ${(err as Error).message}`);
  }
  const r = parsed as Resource;
  if (!r || typeof r !== 'object' || typeof r.kind !== 'string' || !r.metadata || typeof r.metadata.name !== 'string') {
    throw new RoutecatError('E_BAD_DATA', `value at ${key} is not a resource (needs kind and metadata.name)`);
  }
  return { ...r, metadata: { ...r.metadata, resourceVersion: modRevision } };
}

export class ResourceStore {
  readonly #client: Etcd3;
  readonly #onBadData: (bad: BadData) => void;

  constructor(client: Etcd3, options: ResourceStoreOptions = {}) {
    this.#client = client;
    this.#onBadData = options.onBadData ?? (() => {});
  }

  async #read(key: string): Promise<RawKv | undefined> {
    const res = await this.#client.get(key).exec();
    return res.kvs[0] as RawKv | undefined;
  }

  async get(kind: KindInfo, name: string, namespace?: string): Promise<Resource> {
    const key = resourceKey(kind, name, namespace);
    const kv = await this.#read(key);
    if (!kv) throw new NotFoundError(`${describe(kind, name, namespace)} not found`);
    return decodeResource(key, kv.value, kv.mod_revision);
  }

  /** Every resource of a kind (in one namespace, or all when namespace is undefined), by key. */
  async list(kind: KindInfo, namespace?: string): Promise<Resource[]> {
    const res = await this.#client.getAll().prefix(kindPrefix(kind, namespace)).exec();
    const out: Resource[] = [];
    for (const kv of res.kvs as RawKv[]) {
      const key = kv.key.toString('utf8');
      try {
        out.push(decodeResource(key, kv.value, kv.mod_revision));
      } catch (err) {
        this.#onBadData({ key, reason: (err as Error).message });
      }
    }
    return out;
  }

  async create(r: Resource): Promise<Resource> {
    const kind = kindOf(r);
    const key = resourceKey(kind, r.metadata.name, r.metadata.namespace);
    const stored = storedForm({
      ...r,
      metadata: { ...r.metadata, uid: r.metadata.uid ?? randomUUID(), creationTimestamp: r.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z') },
    });
    const txn = await this.#client.if(key, 'Create', '==', 0).then(this.#client.put(key).value(JSON.stringify(stored))).commit();
    if (!txn.succeeded) throw new AlreadyExistsError(`${describe(kind, r.metadata.name, r.metadata.namespace)} already exists`);
    return { ...stored, metadata: { ...stored.metadata, resourceVersion: txn.header.revision } };
  }

  /**
   * Replaces an existing resource. With metadata.resourceVersion set, the write happens only if
   * the stored revision is still that one; without it, against the revision just read.
   */
  async update(r: Resource): Promise<Resource> {
    const kind = kindOf(r);
    const key = resourceKey(kind, r.metadata.name, r.metadata.namespace);
    const kv = await this.#read(key);
    const who = describe(kind, r.metadata.name, r.metadata.namespace);
    if (!kv) throw new NotFoundError(`${who} not found`);
    const current = decodeResource(key, kv.value, kv.mod_revision);
    const expected = r.metadata.resourceVersion ?? kv.mod_revision;
    const stored = storedForm({
      ...r,
      metadata: { ...r.metadata, uid: current.metadata.uid ?? r.metadata.uid, creationTimestamp: current.metadata.creationTimestamp ?? r.metadata.creationTimestamp },
    });
    const txn = await this.#client.if(key, 'Mod', '==', expected).then(this.#client.put(key).value(JSON.stringify(stored))).commit();
    if (!txn.succeeded) {
      throw new ConflictError(`${who} update conflict: modified by another writer (resourceVersion ${expected} is no longer current); get it again and retry`);
    }
    return { ...stored, metadata: { ...stored.metadata, resourceVersion: txn.header.revision } };
  }

  /** Create or update; no write when the stored resource already says the same thing. */
  async apply(r: Resource): Promise<{ resource: Resource; action: ApplyAction }> {
    const kind = kindOf(r);
    const key = resourceKey(kind, r.metadata.name, r.metadata.namespace);
    for (let attempt = 0; ; attempt++) {
      const kv = await this.#read(key);
      try {
        if (!kv) return { resource: await this.create(r), action: 'created' };
        const current = decodeResource(key, kv.value, kv.mod_revision);
        const merged: Resource = {
          ...r,
          metadata: { ...r.metadata, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp, resourceVersion: kv.mod_revision },
        };
        if (canonicalJson(storedForm(merged)) === canonicalJson(storedForm(current))) return { resource: current, action: 'unchanged' };
        return { resource: await this.update(merged), action: 'updated' };
      } catch (err) {
        // Lost a race with another writer: read again and retry a few times.
        if ((err instanceof ConflictError || err instanceof AlreadyExistsError || err instanceof NotFoundError) && attempt < 5) continue;
        throw err;
      }
    }
  }

  async delete(kind: KindInfo, name: string, namespace?: string, resourceVersion?: string): Promise<Resource> {
    const key = resourceKey(kind, name, namespace);
    const who = describe(kind, name, namespace);
    const kv = await this.#read(key);
    if (!kv) throw new NotFoundError(`${who} not found`);
    const expected = resourceVersion ?? kv.mod_revision;
    const txn = await this.#client.if(key, 'Mod', '==', expected).then(this.#client.delete().key(key)).commit();
    if (!txn.succeeded) throw new ConflictError(`${who} delete conflict: modified by another writer (resourceVersion ${expected} is no longer current)`);
    let deleted: Resource;
    try {
      deleted = decodeResource(key, kv.value, kv.mod_revision);
    } catch {
      deleted = { apiVersion: 'projectcalico.org/v3', kind: kind.kind, metadata: { name, namespace } };
    }
    return deleted;
  }
}
