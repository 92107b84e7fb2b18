/**
 * Update-group batches -> UPDATE bytes, encoded ONCE per distinct set of codec options (all peers of
 * a group normally share one: 4-octet AS, no ADD-PATH) and handed out as the same Buffers to every
 * peer of the group, filtered by the families each peer negotiated.
 * A batch that cannot be encoded (no next hop configured for its family, attributes too large) is
 * logged and skipped; it never throws. Pure apart from logging.
 */
import type { AfiSafi, CodecOptions } from '../types.ts';
import { packUpdates } from '../codec/index.ts';
import type { UpdateBatch } from '../rib/update-groups.ts';
import type { Logger } from '../../log.ts';

export function optionsKey(o: CodecOptions): string {
  return `${o.as4 ? 4 : 2}|${o.addPath ? [...o.addPath].sort().join(',') : ''}|${o.maxMessageSize ?? ''}`;
}

/** The UPDATEs for one batch; announcements without a usable next hop are dropped (logged). */
export function encodeBatch(b: UpdateBatch, opts: CodecOptions, log: Logger): Buffer[] {
  let nlri = b.nlri;
  const nextHop = b.afiSafi === 'ipv6-unicast' ? b.nextHop : b.attributes.nextHop;
  if (nlri.length > 0 && nextHop === undefined) {
    log.warn(`not announcing ${nlri.length} ${b.afiSafi} prefixes (first ${nlri[0].prefix}): no next hop configured for the family`);
    nlri = [];
  }
  if (nlri.length === 0 && b.withdrawn.length === 0) return [];
  try {
    return packUpdates({ afiSafi: b.afiSafi, attributes: b.attributes, nlri, withdrawn: b.withdrawn, ...(b.nextHop !== undefined ? { nextHop: b.nextHop } : {}) }, opts);
  } catch (err) {
    log.error(`cannot encode an UPDATE for ${b.afiSafi} (${nlri.length} prefixes, ${b.withdrawn.length} withdrawn): ${err instanceof Error ? err.message : String(err)}`);
    return [];
  }
}

export class BatchEncoder {
  readonly #batches: readonly UpdateBatch[];
  readonly #log: Logger;
  readonly #cache = new Map<string, Array<{ afiSafi: AfiSafi; buffers: Buffer[] }>>();

  constructor(batches: readonly UpdateBatch[], log: Logger) {
    this.#batches = batches;
    this.#log = log;
  }

  /** The bytes for a peer with these codec options and families (shared Buffers, in batch order). */
  forPeer(opts: CodecOptions, families: ReadonlySet<AfiSafi>): Buffer[] {
    const key = optionsKey(opts);
    let enc = this.#cache.get(key);
    if (enc === undefined) {
      enc = this.#batches.map((b) => ({ afiSafi: b.afiSafi, buffers: encodeBatch(b, opts, this.#log) }));
      this.#cache.set(key, enc);
    }
    const out: Buffer[] = [];
    for (const e of enc) if (families.has(e.afiSafi)) for (const b of e.buffers) out.push(b);
    return out;
  }

  /** How many distinct encodings were made (1 for a homogeneous group). */
  get encodings(): number {
    return this.#cache.size;
  }
}
