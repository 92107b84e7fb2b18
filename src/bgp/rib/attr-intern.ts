/**
 * Interning of path attribute sets (BIRD `ea_lookup`, FRR `attrhash`): equal sets map to ONE
 * deep-frozen object with a stable numeric id, reference counted so unused sets are freed.
 * Pure: no I/O, no timers.
 *
 * Speed: the canonical key is computed once per distinct input *object*; a WeakMap from input
 * object to entry makes re-interning the same object (1,000,000 routes sharing one attribute set)
 * an O(1) lookup with no allocation. The frozen output object itself is also recognised.
 */
import type { AsPathSegment, PathAttributes } from '../types.ts';

export interface InternedAttrs {
  /** Stable while the entry lives (refs > 0); never reused for another set while it lives. */
  readonly id: number;
  /** Canonical key: equal for deep-equal attribute sets. */
  readonly key: string;
  /** Deep-frozen canonical copy. */
  readonly attrs: PathAttributes;
  /** Current reference count (read-only to callers; use AttrTable.retain / release). */
  readonly refs: number;
}

interface Entry {
  readonly id: number;
  readonly key: string;
  readonly attrs: PathAttributes;
  refs: number;
}

function hex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  return s;
}

function segKey(s: AsPathSegment): string {
  const t = s.type === 'sequence' ? 'q' : s.type === 'set' ? 's' : s.type === 'confed-sequence' ? 'Q' : 'S';
  return t + s.asns.join(',');
}

/** Canonical key: a fixed field order, so property order and absent-vs-undefined do not matter. */
export function attrKey(a: PathAttributes): string {
  let k = '';
  if (a.origin !== undefined) k += 'o' + a.origin;
  if (a.asPath !== undefined) k += '|p' + a.asPath.map(segKey).join(';');
  if (a.nextHop !== undefined) k += '|n' + a.nextHop;
  if (a.med !== undefined) k += '|m' + a.med;
  if (a.localPref !== undefined) k += '|l' + a.localPref;
  if (a.atomicAggregate !== undefined) k += '|a' + (a.atomicAggregate ? 1 : 0);
  if (a.aggregator !== undefined) k += '|g' + a.aggregator.asn + '@' + a.aggregator.address;
  if (a.communities !== undefined) k += '|c' + a.communities.join(',');
  if (a.largeCommunities !== undefined) k += '|L' + a.largeCommunities.map((c) => c.join(':')).join(',');
  if (a.originatorId !== undefined) k += '|O' + a.originatorId;
  if (a.clusterList !== undefined) k += '|C' + a.clusterList.join(',');
  if (a.unknown !== undefined) k += '|u' + a.unknown.map((u) => u.flags + ':' + u.code + ':' + hex(u.value)).join(',');
  return k;
}

/** A deep-frozen copy with only the defined fields (canonical shape). */
function frozenCopy(a: PathAttributes): PathAttributes {
  const o: Record<string, unknown> = {};
  if (a.origin !== undefined) o.origin = a.origin;
  if (a.asPath !== undefined) o.asPath = Object.freeze(a.asPath.map((s) => Object.freeze({ type: s.type, asns: Object.freeze([...s.asns]) })));
  if (a.nextHop !== undefined) o.nextHop = a.nextHop;
  if (a.med !== undefined) o.med = a.med;
  if (a.localPref !== undefined) o.localPref = a.localPref;
  if (a.atomicAggregate !== undefined) o.atomicAggregate = a.atomicAggregate;
  if (a.aggregator !== undefined) o.aggregator = Object.freeze({ asn: a.aggregator.asn, address: a.aggregator.address });
  if (a.communities !== undefined) o.communities = Object.freeze([...a.communities]);
  if (a.largeCommunities !== undefined) o.largeCommunities = Object.freeze(a.largeCommunities.map((c) => Object.freeze([c[0], c[1], c[2]] as const)));
  if (a.originatorId !== undefined) o.originatorId = a.originatorId;
  if (a.clusterList !== undefined) o.clusterList = Object.freeze([...a.clusterList]);
  // Uint8Array cannot be frozen; we keep private copies so callers cannot alias them.
  if (a.unknown !== undefined) o.unknown = Object.freeze(a.unknown.map((u) => Object.freeze({ flags: u.flags, code: u.code, value: new Uint8Array(u.value) })));
  return Object.freeze(o) as PathAttributes;
}

export class AttrTable {
  readonly #byKey = new Map<string, Entry>();
  readonly #byId = new Map<number, Entry>();
  /** Input object (or frozen output object) -> entry; a cache only, validated on use. */
  readonly #byObject = new WeakMap<PathAttributes, Entry>();
  #nextId = 1;

  /** Number of live attribute sets. */
  get size(): number {
    return this.#byKey.size;
  }

  /**
   * Find or create the entry for `attrs` and add `count` references (default 1). With count 0
   * the entry stays until retained, or freed by `sweep`.
   */
  intern(attrs: PathAttributes, count = 1): InternedAttrs {
    let e = this.#byObject.get(attrs);
    if (e === undefined || e.refs === 0) {
      const key = attrKey(attrs);
      e = this.#byKey.get(key);
      if (e === undefined) {
        e = { id: this.#nextId++, key, attrs: frozenCopy(attrs), refs: 0 };
        this.#byKey.set(key, e);
        this.#byId.set(e.id, e);
        this.#byObject.set(e.attrs, e);
      }
      // Inputs are `readonly` data: callers must not mutate an attribute object after passing it.
      this.#byObject.set(attrs, e);
    }
    e.refs += count;
    return e;
  }

  /** Add references to a live entry (one still in the table, even with 0 references). */
  retain(h: InternedAttrs, count = 1): void {
    const e = h as Entry;
    if (e.refs <= 0 && this.#byId.get(e.id) !== e) throw new Error(`attribute set ${e.id} is not live`);
    e.refs += count;
  }

  /** Free an entry interned with count 0 that nobody retained. */
  sweep(h: InternedAttrs): void {
    const e = h as Entry;
    if (e.refs === 0 && this.#byId.get(e.id) === e) {
      this.#byKey.delete(e.key);
      this.#byId.delete(e.id);
    }
  }

  /** Drop references; the entry is freed when none remain. */
  release(h: InternedAttrs, count = 1): void {
    const e = h as Entry;
    if (e.refs < count) throw new Error(`attribute set ${e.id}: release of ${count} with ${e.refs} references`);
    e.refs -= count;
    if (e.refs === 0) {
      this.#byKey.delete(e.key);
      this.#byId.delete(e.id);
    }
  }

  get(id: number): InternedAttrs | undefined {
    return this.#byId.get(id);
  }

  lookup(attrs: PathAttributes): InternedAttrs | undefined {
    return this.#byKey.get(attrKey(attrs));
  }
}
