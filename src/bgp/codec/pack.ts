/**
 * DOC: Building UPDATEs for many prefixes sharing one attribute set: as many prefixes per
 * UPDATE as fit in the maximum message size (RFC 4271 4096 bytes). The attribute set is
 * encoded once. IPv4 uses the classic Withdrawn Routes / NLRI fields; IPv6 uses MP_REACH_NLRI
 * (first attribute, RFC 7606 5.1) with the RFC 2545 next hop (global, or global + link-local
 * = 32 bytes) and MP_UNREACH_NLRI. Also End-of-RIB markers (RFC 4724 section 2).
 */
import type { AfiSafi, CodecOptions, Nlri, PathAttributes, UpdateMessage } from '../types.ts';
import { AttrCode, AttrFlag, encodeAttributes } from './attributes.ts';
import { BgpEncodeError } from './errors.ts';
import { afiOf, SAFI_UNICAST } from './families.ts';
import { encodeMessage, MAX_MESSAGE_LENGTH } from './messages.ts';
import { writeIPv6, writePrefix } from './prefixes.ts';
import { Writer } from './writer.ts';

export interface PackInput {
  readonly afiSafi: AfiSafi;
  readonly attributes: PathAttributes;
  readonly nlri: readonly Nlri[];
  readonly withdrawn: readonly Nlri[];
  /** IPv4: overrides attributes.nextHop. IPv6: the global next hop (required when nlri is non-empty). */
  readonly nextHop?: string;
  /** IPv6 only: link-local next hop (RFC 2545: 32-byte next hop). */
  readonly linkLocalNextHop?: string;
}

function header(w: Writer): void {
  w.fillBytes(0xff, 16).u16(0).u8(2);
}

function finish(w: Writer): Buffer {
  w.set16(16, w.pos);
  return w.finish();
}

/**
 * Fill messages with `items`: `begin` writes everything before the first item, `end` everything
 * after the last; `trailer` is the number of bytes `end` will add.
 */
function fill(
  items: readonly Nlri[],
  max: number,
  trailer: number,
  begin: (w: Writer) => void,
  item: (w: Writer, n: Nlri) => void,
  end: (w: Writer) => void,
): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < items.length) {
    const w = new Writer(max + 64);
    begin(w);
    const base = w.pos;
    while (i < items.length) {
      const before = w.pos;
      item(w, items[i]);
      if (w.pos + trailer > max) {
        w.pos = before;
        break;
      }
      i++;
    }
    if (w.pos === base) throw new BgpEncodeError(`attributes of ${base + trailer} bytes leave no room for a prefix in ${max}`);
    end(w);
    out.push(finish(w));
  }
  return out;
}

export function packUpdates(input: PackInput, opts: CodecOptions): Buffer[] {
  const max = opts.maxMessageSize ?? MAX_MESSAGE_LENGTH;
  const f = input.afiSafi;
  const afi = afiOf(f);
  const addPath = opts.addPath?.has(f) ?? false;
  const out: Buffer[] = [];

  if (afi === 1) {
    if (input.withdrawn.length > 0) {
      let wlAt = 0;
      out.push(
        ...fill(
          input.withdrawn,
          max,
          2,
          (w) => {
            header(w);
            wlAt = w.mark16();
          },
          (w, n) => writePrefix(w, n, 1, addPath),
          (w) => {
            w.fill16(wlAt);
            w.u16(0);
          },
        ),
      );
    }
    if (input.nlri.length > 0) {
      const attrs: PathAttributes =
        input.nextHop !== undefined ? { ...input.attributes, nextHop: input.nextHop } : input.attributes;
      if (attrs.nextHop === undefined) throw new BgpEncodeError('packUpdates: IPv4 NLRI without a next hop');
      const aw = new Writer(1024);
      encodeAttributes(aw, attrs, opts);
      const attrBytes = aw.finish();
      out.push(
        ...fill(
          input.nlri,
          max,
          0,
          (w) => {
            header(w);
            w.u16(0).u16(attrBytes.length).bytes(attrBytes);
          },
          (w, n) => writePrefix(w, n, 1, addPath),
          () => {},
        ),
      );
    }
    return out;
  }

  if (input.withdrawn.length > 0) {
    let talAt = 0;
    let mpAt = 0;
    out.push(
      ...fill(
        input.withdrawn,
        max,
        0,
        (w) => {
          header(w);
          w.u16(0);
          talAt = w.mark16();
          w.u8(AttrFlag.OPTIONAL | AttrFlag.EXTENDED_LENGTH).u8(AttrCode.MP_UNREACH_NLRI);
          mpAt = w.mark16();
          w.u16(afi).u8(SAFI_UNICAST);
        },
        (w, n) => writePrefix(w, n, afi, addPath),
        (w) => {
          w.fill16(mpAt);
          w.fill16(talAt);
        },
      ),
    );
  }
  if (input.nlri.length > 0) {
    if (input.nextHop === undefined) throw new BgpEncodeError('packUpdates: IPv6 NLRI without a next hop');
    const nextHop = input.nextHop;
    const { nextHop: _ignored, ...rest } = input.attributes;
    const aw = new Writer(1024);
    encodeAttributes(aw, rest, opts);
    const attrBytes = aw.finish();
    const nh = new Writer(32);
    writeIPv6(nh, nextHop, 'IPv6 next hop');
    if (input.linkLocalNextHop !== undefined) writeIPv6(nh, input.linkLocalNextHop, 'IPv6 link-local next hop');
    const nhBytes = nh.finish();
    let talAt = 0;
    let mpAt = 0;
    out.push(
      ...fill(
        input.nlri,
        max,
        attrBytes.length,
        (w) => {
          header(w);
          w.u16(0);
          talAt = w.mark16();
          w.u8(AttrFlag.OPTIONAL | AttrFlag.EXTENDED_LENGTH).u8(AttrCode.MP_REACH_NLRI);
          mpAt = w.mark16();
          w.u16(afi).u8(SAFI_UNICAST).u8(nhBytes.length).bytes(nhBytes).u8(0);
        },
        (w, n) => writePrefix(w, n, afi, addPath),
        (w) => {
          w.fill16(mpAt);
          w.bytes(attrBytes);
          w.fill16(talAt);
        },
      ),
    );
  }
  return out;
}

/** End-of-RIB marker: IPv4 an empty UPDATE, other families an UPDATE with an empty MP_UNREACH_NLRI. */
export function endOfRib(afiSafi: AfiSafi, opts: CodecOptions): Buffer {
  const u: UpdateMessage =
    afiSafi === 'ipv4-unicast'
      ? { type: 'update', withdrawn: [], attributes: {}, nlri: [] }
      : { type: 'update', withdrawn: [], attributes: {}, nlri: [], mpUnreach: { afiSafi, withdrawn: [] } };
  return encodeMessage(u, opts);
}

/** The family whose End-of-RIB this UPDATE is, or undefined when it is not one. */
export function endOfRibFamily(u: UpdateMessage): AfiSafi | undefined {
  if (u.withdrawn.length > 0 || u.nlri.length > 0 || u.mpReach || u.handling) return undefined;
  for (const _k in u.attributes) return undefined;
  if (!u.mpUnreach) return 'ipv4-unicast';
  return u.mpUnreach.withdrawn.length === 0 ? u.mpUnreach.afiSafi : undefined;
}

export function isEndOfRib(u: UpdateMessage): boolean {
  return endOfRibFamily(u) !== undefined;
}
