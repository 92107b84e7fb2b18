/**
 * DOC: BGP path attributes, described in ONE table (`ATTRIBUTES`): code -> name, expected
 * Optional/Transitive flags, decoder, encoder, and the RFC 7606 handling applied when the
 * attribute is malformed ('treat-as-withdraw', 'attribute-discard' or 'session-reset').
 * Also the attribute-list walk for UPDATE decoding (RFC 7606 sections 3-5: duplicates,
 * flags, overrun, unknown attributes) and the RFC 6793 AS4_PATH/AS4_AGGREGATOR merge when the
 * session is 2-octet. Pure data in, data out; never logs.
 */
import type { AfiSafi, AsPathSegment, CodecOptions, Nlri, PathAttributes, UpdateMessage } from '../types.ts';
import { BgpEncodeError, BgpError, ErrorCode, UpdateSubcode } from './errors.ts';
import { afiOf, afiSafiOf, SAFI_UNICAST } from './families.ts';
import { decodePrefixes, formatIPv4, formatIPv6, writeIPv4, writeIPv6, writePrefix } from './prefixes.ts';
import { Reader } from './reader.ts';
import type { Writer } from './writer.ts';

export const AS_TRANS = 23456;

export const AttrFlag = { OPTIONAL: 0x80, TRANSITIVE: 0x40, PARTIAL: 0x20, EXTENDED_LENGTH: 0x10 } as const;
const WELL_KNOWN = AttrFlag.TRANSITIVE;
const OPTIONAL_TRANSITIVE = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE;
const OPTIONAL_NON_TRANSITIVE = AttrFlag.OPTIONAL;

export const AttrCode = {
  ORIGIN: 1,
  AS_PATH: 2,
  NEXT_HOP: 3,
  MULTI_EXIT_DISC: 4,
  LOCAL_PREF: 5,
  ATOMIC_AGGREGATE: 6,
  AGGREGATOR: 7,
  COMMUNITIES: 8,
  ORIGINATOR_ID: 9,
  CLUSTER_LIST: 10,
  MP_REACH_NLRI: 14,
  MP_UNREACH_NLRI: 15,
  AS4_PATH: 17,
  AS4_AGGREGATOR: 18,
  LARGE_COMMUNITIES: 32,
} as const;

export type Handling = 'treat-as-withdraw' | 'attribute-discard' | 'session-reset';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type MpReach = NonNullable<UpdateMessage['mpReach']>;
type MpUnreach = NonNullable<UpdateMessage['mpUnreach']>;

/** Mutable state while decoding one UPDATE's attribute list. */
export interface DecodeState {
  readonly opts: CodecOptions;
  readonly attrs: Mutable<PathAttributes>;
  as4Path?: AsPathSegment[];
  as4Aggregator?: { asn: number; address: string };
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
  /** 0 none, 1 attribute-discard, 2 treat-as-withdraw. */
  level: number;
  errors: string[];
}

interface EncodeCtx {
  readonly as4: boolean;
}

export interface AttrSpec {
  readonly code: number;
  readonly name: string;
  /** Expected Optional and Transitive bits (0x80 / 0x40). */
  readonly flags: number;
  /** RFC 7606 handling when malformed. */
  readonly onError: Handling;
  /** NOTIFICATION code/subcode when the handling is session-reset (and for logs otherwise). */
  readonly subcode: number;
  /** Decode the value (the reader spans it exactly); throw BgpError when malformed. */
  readonly decode: (v: Reader, st: DecodeState) => void;
  /** Encode the value if `a` carries this attribute; return false when absent. MP attributes encode elsewhere. */
  readonly encode?: (w: Writer, a: PathAttributes, ctx: EncodeCtx) => boolean;
}

function malformed(spec: { name: string; subcode: number }, msg: string): BgpError {
  return new BgpError(`${spec.name}: ${msg}`, ErrorCode.UPDATE, spec.subcode);
}

function expectLength(v: Reader, spec: { name: string }, n: number): void {
  if (v.remaining !== n) {
    throw new BgpError(`${spec.name}: length ${v.remaining} != ${n}`, ErrorCode.UPDATE, UpdateSubcode.ATTRIBUTE_LENGTH);
  }
}

function expectMultiple(v: Reader, spec: { name: string }, n: number): void {
  if (v.remaining === 0 || v.remaining % n !== 0) {
    throw new BgpError(
      `${spec.name}: length ${v.remaining} is not a non-zero multiple of ${n}`,
      ErrorCode.UPDATE,
      UpdateSubcode.ATTRIBUTE_LENGTH,
    );
  }
}

const SEGMENT_TYPES: readonly AsPathSegment['type'][] = ['set', 'sequence', 'confed-sequence', 'confed-set'];
const SEGMENT_CODE: Record<AsPathSegment['type'], number> = { set: 1, sequence: 2, 'confed-sequence': 3, 'confed-set': 4 };

function decodeAsPath(v: Reader, spec: { name: string; subcode: number }, asnSize: 2 | 4): AsPathSegment[] {
  const out: AsPathSegment[] = [];
  while (!v.done) {
    if (v.remaining < 2) throw malformed(spec, 'one octet left after the last segment');
    const t = v.u8();
    const n = v.u8();
    const type = SEGMENT_TYPES[t - 1];
    if (type === undefined) throw malformed(spec, `unknown segment type ${t}`);
    if (n === 0) throw malformed(spec, 'segment of length 0');
    if (v.remaining < n * asnSize) throw malformed(spec, `segment of ${n} ASNs overruns the attribute`);
    const asns: number[] = new Array(n);
    for (let i = 0; i < n; i++) asns[i] = asnSize === 4 ? v.u32() : v.u16();
    out.push({ type, asns });
  }
  return out;
}

function encodeAsPath(w: Writer, path: readonly AsPathSegment[], asnSize: 2 | 4): void {
  for (const seg of path) {
    const code = SEGMENT_CODE[seg.type];
    if (code === undefined) throw new BgpEncodeError(`unknown AS_PATH segment type '${String(seg.type)}'`);
    for (let i = 0; i < seg.asns.length; i += 255) {
      const chunk = seg.asns.slice(i, i + 255);
      w.u8(code).u8(chunk.length);
      for (const asn of chunk) {
        checkAsn(asn);
        if (asnSize === 4) w.u32(asn);
        else w.u16(asn > 0xffff ? AS_TRANS : asn);
      }
    }
  }
}

function checkAsn(asn: number): void {
  if (!Number.isInteger(asn) || asn < 0 || asn > 0xffffffff) throw new BgpEncodeError(`invalid ASN ${asn}`);
}

function checkU32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new BgpEncodeError(`invalid ${what} ${v}`);
  return v;
}

/** AS4_PATH is needed when a non-confederation segment has a 4-octet ASN (confed segments never go in AS4_PATH). */
function needsAs4(path: readonly AsPathSegment[]): boolean {
  return path.some((s) => !isConfed(s) && s.asns.some((a) => a > 0xffff));
}

function isConfed(s: AsPathSegment): boolean {
  return s.type === 'confed-sequence' || s.type === 'confed-set';
}

function validNextHop(b: Buffer, p: number): boolean {
  const first = b[p];
  if (first >= 224) return false; // multicast, class E, broadcast
  return b.readUInt32BE(p) !== 0;
}

function decodeMp(v: Reader, st: DecodeState, reach: boolean, spec: AttrSpec): void {
  const afi = v.u16();
  const safi = v.u8();
  const f = afiSafiOf(afi, safi);
  if (f === undefined) {
    st.errors.push(`${spec.name} for unsupported AFI ${afi} SAFI ${safi} ignored`);
    st.level = Math.max(st.level, 1);
    return;
  }
  const addPath = st.opts.addPath?.has(f) ?? false;
  const afiNum = afiOf(f);
  if (!reach) {
    st.mpUnreach = { afiSafi: f, withdrawn: decodePrefixes(v.buf, v.pos, v.end, afiNum, addPath, ErrorCode.UPDATE, UpdateSubcode.INVALID_NETWORK_FIELD) };
    return;
  }
  const nhLen = v.u8();
  const nh = v.bytes(nhLen);
  let nextHop: string;
  let linkLocalNextHop: string | undefined;
  if (afiNum === 1) {
    if (nhLen !== 4) throw malformed(spec, `IPv4 next hop length ${nhLen} != 4`);
    nextHop = formatIPv4(nh, 0);
  } else {
    if (nhLen !== 16 && nhLen !== 32) throw malformed(spec, `IPv6 next hop length ${nhLen} not 16 or 32 (RFC 2545)`);
    nextHop = formatIPv6(nh, 0);
    if (nhLen === 32) linkLocalNextHop = formatIPv6(nh, 16);
  }
  v.u8(); // reserved (formerly SNPA count)
  const nlri = decodePrefixes(v.buf, v.pos, v.end, afiNum, addPath, ErrorCode.UPDATE, UpdateSubcode.INVALID_NETWORK_FIELD);
  st.mpReach = linkLocalNextHop === undefined ? { afiSafi: f, nextHop, nlri } : { afiSafi: f, nextHop, linkLocalNextHop, nlri };
}

/** THE attribute table. Order here is the encode order (MP attributes are written first, elsewhere). */
export const ATTRIBUTES: readonly AttrSpec[] = [
  {
    code: AttrCode.ORIGIN,
    name: 'ORIGIN',
    flags: WELL_KNOWN,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.INVALID_ORIGIN,
    decode(v, st) {
      expectLength(v, this, 1);
      const o = v.u8();
      if (o > 2) throw malformed(this, `undefined value ${o}`);
      st.attrs.origin = o as 0 | 1 | 2;
    },
    encode(w, a) {
      if (a.origin === undefined) return false;
      w.u8(a.origin);
      return true;
    },
  },
  {
    code: AttrCode.AS_PATH,
    name: 'AS_PATH',
    flags: WELL_KNOWN,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.MALFORMED_AS_PATH,
    decode(v, st) {
      st.attrs.asPath = decodeAsPath(v, this, st.opts.as4 ? 4 : 2);
    },
    encode(w, a, ctx) {
      if (a.asPath === undefined) return false;
      encodeAsPath(w, a.asPath, ctx.as4 ? 4 : 2);
      return true;
    },
  },
  {
    code: AttrCode.NEXT_HOP,
    name: 'NEXT_HOP',
    flags: WELL_KNOWN,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.INVALID_NEXT_HOP,
    decode(v, st) {
      expectLength(v, this, 4);
      if (!validNextHop(v.buf, v.pos)) throw malformed(this, `invalid address ${formatIPv4(v.buf, v.pos)}`);
      st.attrs.nextHop = v.ipv4();
    },
    encode(w, a) {
      if (a.nextHop === undefined) return false;
      writeIPv4(w, a.nextHop, 'NEXT_HOP');
      return true;
    },
  },
  {
    code: AttrCode.MULTI_EXIT_DISC,
    name: 'MULTI_EXIT_DISC',
    flags: OPTIONAL_NON_TRANSITIVE,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      expectLength(v, this, 4);
      st.attrs.med = v.u32();
    },
    encode(w, a) {
      if (a.med === undefined) return false;
      w.u32(checkU32(a.med, 'MED'));
      return true;
    },
  },
  {
    code: AttrCode.LOCAL_PREF,
    name: 'LOCAL_PREF',
    flags: WELL_KNOWN,
    onError: 'treat-as-withdraw', // iBGP; from eBGP always attribute-discard (RFC 7606 7.5), see decode
    subcode: UpdateSubcode.ATTRIBUTE_LENGTH,
    decode(v, st) {
      if (!st.opts.ibgp) {
        st.errors.push('LOCAL_PREF from an external peer discarded');
        st.level = Math.max(st.level, 1);
        return;
      }
      expectLength(v, this, 4);
      st.attrs.localPref = v.u32();
    },
    encode(w, a) {
      if (a.localPref === undefined) return false;
      w.u32(checkU32(a.localPref, 'LOCAL_PREF'));
      return true;
    },
  },
  {
    code: AttrCode.ATOMIC_AGGREGATE,
    name: 'ATOMIC_AGGREGATE',
    flags: WELL_KNOWN,
    onError: 'attribute-discard',
    subcode: UpdateSubcode.ATTRIBUTE_LENGTH,
    decode(v, st) {
      expectLength(v, this, 0);
      st.attrs.atomicAggregate = true;
    },
    encode(_w, a) {
      return a.atomicAggregate === true;
    },
  },
  {
    code: AttrCode.AGGREGATOR,
    name: 'AGGREGATOR',
    flags: OPTIONAL_TRANSITIVE,
    onError: 'attribute-discard',
    subcode: UpdateSubcode.ATTRIBUTE_LENGTH,
    decode(v, st) {
      expectLength(v, this, st.opts.as4 ? 8 : 6);
      const asn = st.opts.as4 ? v.u32() : v.u16();
      st.attrs.aggregator = { asn, address: v.ipv4() };
    },
    encode(w, a, ctx) {
      if (a.aggregator === undefined) return false;
      checkAsn(a.aggregator.asn);
      if (ctx.as4) w.u32(a.aggregator.asn);
      else w.u16(a.aggregator.asn > 0xffff ? AS_TRANS : a.aggregator.asn);
      writeIPv4(w, a.aggregator.address, 'AGGREGATOR');
      return true;
    },
  },
  {
    code: AttrCode.COMMUNITIES,
    name: 'COMMUNITIES',
    flags: OPTIONAL_TRANSITIVE,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      expectMultiple(v, this, 4);
      const out: number[] = new Array(v.remaining / 4);
      for (let i = 0; i < out.length; i++) out[i] = v.u32();
      st.attrs.communities = out;
    },
    encode(w, a) {
      if (a.communities === undefined || a.communities.length === 0) return false;
      for (const c of a.communities) w.u32(checkU32(c, 'community'));
      return true;
    },
  },
  {
    code: AttrCode.ORIGINATOR_ID,
    name: 'ORIGINATOR_ID',
    flags: OPTIONAL_NON_TRANSITIVE,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      expectLength(v, this, 4);
      st.attrs.originatorId = v.ipv4();
    },
    encode(w, a) {
      if (a.originatorId === undefined) return false;
      writeIPv4(w, a.originatorId, 'ORIGINATOR_ID');
      return true;
    },
  },
  {
    code: AttrCode.CLUSTER_LIST,
    name: 'CLUSTER_LIST',
    flags: OPTIONAL_NON_TRANSITIVE,
    onError: 'treat-as-withdraw',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      expectMultiple(v, this, 4);
      const out: string[] = [];
      while (!v.done) out.push(v.ipv4());
      st.attrs.clusterList = out;
    },
    encode(w, a) {
      if (a.clusterList === undefined || a.clusterList.length === 0) return false;
      for (const c of a.clusterList) writeIPv4(w, c, 'CLUSTER_LIST');
      return true;
    },
  },
  {
    code: AttrCode.MP_REACH_NLRI,
    name: 'MP_REACH_NLRI',
    flags: OPTIONAL_NON_TRANSITIVE,
    onError: 'session-reset', // RFC 7606 7.11 / 5.3: the NLRI cannot be located reliably
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      decodeMp(v, st, true, this);
    },
  },
  {
    code: AttrCode.MP_UNREACH_NLRI,
    name: 'MP_UNREACH_NLRI',
    flags: OPTIONAL_NON_TRANSITIVE,
    onError: 'session-reset',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      decodeMp(v, st, false, this);
    },
  },
  {
    code: AttrCode.AS4_PATH,
    name: 'AS4_PATH',
    flags: OPTIONAL_TRANSITIVE,
    onError: 'attribute-discard', // RFC 6793 section 6 / RFC 7606 7.15
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      if (st.opts.as4) return; // a NEW speaker ignores AS4_PATH from a NEW speaker (RFC 6793 4.1)
      const path = decodeAsPath(v, this, 4);
      if (path.some(isConfed)) throw malformed(this, 'confederation segment in AS4_PATH');
      st.as4Path = path;
    },
    encode(w, a, ctx) {
      if (ctx.as4 || a.asPath === undefined || !needsAs4(a.asPath)) return false;
      encodeAsPath(
        w,
        a.asPath.filter((s) => !isConfed(s)),
        4,
      );
      return true;
    },
  },
  {
    code: AttrCode.AS4_AGGREGATOR,
    name: 'AS4_AGGREGATOR',
    flags: OPTIONAL_TRANSITIVE,
    onError: 'attribute-discard',
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      if (st.opts.as4) return;
      expectLength(v, this, 8);
      const asn = v.u32();
      st.as4Aggregator = { asn, address: v.ipv4() };
    },
    encode(w, a, ctx) {
      if (ctx.as4 || a.aggregator === undefined || a.aggregator.asn <= 0xffff) return false;
      w.u32(a.aggregator.asn);
      writeIPv4(w, a.aggregator.address, 'AS4_AGGREGATOR');
      return true;
    },
  },
  {
    code: AttrCode.LARGE_COMMUNITIES,
    name: 'LARGE_COMMUNITIES',
    flags: OPTIONAL_TRANSITIVE,
    onError: 'treat-as-withdraw', // RFC 8092 section 6
    subcode: UpdateSubcode.OPTIONAL_ATTRIBUTE,
    decode(v, st) {
      expectMultiple(v, this, 12);
      const out: Array<readonly [number, number, number]> = [];
      while (!v.done) out.push([v.u32(), v.u32(), v.u32()]);
      st.attrs.largeCommunities = out;
    },
    encode(w, a) {
      if (a.largeCommunities === undefined || a.largeCommunities.length === 0) return false;
      for (const [g, l1, l2] of a.largeCommunities) {
        w.u32(checkU32(g, 'large community')).u32(checkU32(l1, 'large community')).u32(checkU32(l2, 'large community'));
      }
      return true;
    },
  },
];

const BY_CODE: ReadonlyArray<AttrSpec | undefined> = (() => {
  const t: Array<AttrSpec | undefined> = new Array(256).fill(undefined);
  for (const s of ATTRIBUTES) t[s.code] = s;
  return t;
})();

export function attributeSpec(code: number): AttrSpec | undefined {
  return BY_CODE[code];
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Write one attribute: header, then `body` writes the value; picks 1- or 2-octet length. */
export function writeAttribute(w: Writer, flags: number, code: number, body: (w: Writer) => boolean): boolean {
  const start = w.pos;
  w.u8(flags & ~AttrFlag.EXTENDED_LENGTH).u8(code).u16(0);
  const vstart = w.pos;
  if (!body(w)) {
    w.pos = start;
    return false;
  }
  const n = w.pos - vstart;
  if (n > 0xffff) throw new BgpEncodeError(`attribute ${code} value of ${n} bytes is too long`);
  if (n <= 0xff) {
    w.collapse(start + 2);
    w.set8(start + 2, n);
  } else {
    w.set8(start, (flags | AttrFlag.EXTENDED_LENGTH) & 0xff);
    w.set16(start + 2, n);
  }
  return true;
}

/** Encode every attribute `a` carries except MP_REACH/MP_UNREACH, in table order, then unknowns. */
export function encodeAttributes(w: Writer, a: PathAttributes, opts: CodecOptions): void {
  const ctx: EncodeCtx = { as4: opts.as4 };
  for (const spec of ATTRIBUTES) {
    const enc = spec.encode;
    if (enc === undefined) continue;
    writeAttribute(w, spec.flags, spec.code, (ww) => enc(ww, a, ctx));
  }
  for (const u of a.unknown ?? []) {
    if (BY_CODE[u.code] !== undefined) throw new BgpEncodeError(`unknown attribute ${u.code} is a known attribute code`);
    if (!(u.flags & AttrFlag.OPTIONAL)) throw new BgpEncodeError(`unknown attribute ${u.code} is not optional`);
    const flags = u.flags & AttrFlag.TRANSITIVE ? (u.flags & 0xe0) | AttrFlag.PARTIAL : u.flags & 0xc0;
    writeAttribute(w, flags, u.code, (ww) => {
      ww.bytes(u.value);
      return true;
    });
  }
}

/** Encode an MP_REACH_NLRI attribute. */
export function encodeMpReach(w: Writer, mp: MpReach, opts: CodecOptions): void {
  const afi = afiOf(mp.afiSafi);
  const addPath = opts.addPath?.has(mp.afiSafi) ?? false;
  writeAttribute(w, OPTIONAL_NON_TRANSITIVE, AttrCode.MP_REACH_NLRI, (ww) => {
    ww.u16(afi).u8(SAFI_UNICAST);
    const at = ww.mark8();
    if (afi === 1) writeIPv4(ww, mp.nextHop, 'MP_REACH next hop');
    else {
      writeIPv6(ww, mp.nextHop, 'MP_REACH next hop');
      if (mp.linkLocalNextHop !== undefined) writeIPv6(ww, mp.linkLocalNextHop, 'MP_REACH link-local next hop');
    }
    ww.fill8(at);
    ww.u8(0);
    for (const n of mp.nlri) writePrefix(ww, n, afi, addPath);
    return true;
  });
}

export function encodeMpUnreach(w: Writer, mp: MpUnreach, opts: CodecOptions): void {
  const afi = afiOf(mp.afiSafi);
  const addPath = opts.addPath?.has(mp.afiSafi) ?? false;
  writeAttribute(w, OPTIONAL_NON_TRANSITIVE, AttrCode.MP_UNREACH_NLRI, (ww) => {
    ww.u16(afi).u8(SAFI_UNICAST);
    for (const n of mp.withdrawn) writePrefix(ww, n, afi, addPath);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Decoding

export interface DecodedAttributes {
  readonly attributes: PathAttributes;
  readonly mpReach?: MpReach;
  readonly mpUnreach?: MpUnreach;
  /** 0 none, 1 attribute-discard, 2 treat-as-withdraw. */
  readonly level: number;
  readonly errors: string[];
}

const seen = new Uint8Array(256);

/**
 * Walk the path attributes in buf[start, end). Session-resetting errors throw BgpError;
 * everything else is recorded in `level`/`errors` per RFC 7606.
 */
export function decodeAttributes(buf: Buffer, start: number, end: number, opts: CodecOptions): DecodedAttributes {
  const st: DecodeState = { opts, attrs: {}, level: 0, errors: [] };
  seen.fill(0);
  let unknown: Array<{ flags: number; code: number; value: Uint8Array }> | undefined;
  let p = start;
  while (p < end) {
    // RFC 7606 section 4: too few octets for a header, or a length overrunning the list:
    // treat-as-withdraw, and the Total Path Attribute Length still locates the NLRI.
    if (end - p < 3) {
      st.errors.push(`path attributes: ${end - p} trailing octet(s), too short for an attribute header`);
      st.level = 2;
      break;
    }
    const flags = buf[p];
    const code = buf[p + 1];
    const ext = (flags & AttrFlag.EXTENDED_LENGTH) !== 0;
    if (ext && end - p < 4) {
      st.errors.push(`path attributes: attribute ${code} header truncated`);
      st.level = 2;
      break;
    }
    const len = ext ? buf.readUInt16BE(p + 2) : buf[p + 2];
    const vstart = p + (ext ? 4 : 3);
    if (vstart + len > end) {
      st.errors.push(`path attributes: attribute ${code} length ${len} overruns the attribute list`);
      st.level = 2;
      break;
    }
    const vend = vstart + len;
    const spec = BY_CODE[code];
    if (seen[code]) {
      if (code === AttrCode.MP_REACH_NLRI || code === AttrCode.MP_UNREACH_NLRI) {
        throw new BgpError(`${spec?.name ?? code} appears more than once`, ErrorCode.UPDATE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST);
      }
      st.errors.push(`attribute ${spec?.name ?? code} repeated: later occurrence discarded`);
      st.level = Math.max(st.level, 1);
      p = vend;
      continue;
    }
    seen[code] = 1;
    if (spec === undefined) {
      if (!(flags & AttrFlag.OPTIONAL)) {
        throw new BgpError(
          `unrecognized well-known attribute ${code}`,
          ErrorCode.UPDATE,
          UpdateSubcode.UNRECOGNIZED_WELL_KNOWN,
          Uint8Array.from(buf.subarray(p, vend)),
        );
      }
      if (flags & AttrFlag.TRANSITIVE) {
        (unknown ??= []).push({ flags: flags & 0xe0, code, value: Uint8Array.from(buf.subarray(vstart, vend)) });
      }
      p = vend;
      continue;
    }
    if ((flags & 0xc0) !== spec.flags) {
      const msg = `${spec.name}: flags 0x${flags.toString(16)} do not match expected 0x${spec.flags.toString(16)}`;
      st.errors.push(msg);
      if (spec.onError === 'attribute-discard') {
        st.level = Math.max(st.level, 1);
        p = vend;
        continue;
      }
      // RFC 7606 3(c): malformed -> treat-as-withdraw; still parse (MP attributes carry the NLRI).
      st.level = 2;
    }
    try {
      spec.decode(new Reader(buf, vstart, vend, ErrorCode.UPDATE, UpdateSubcode.ATTRIBUTE_LENGTH, spec.name), st);
    } catch (e) {
      if (!(e instanceof BgpError)) throw e;
      if (spec.onError === 'session-reset') {
        throw new BgpError(e.message, e.notification.code, e.notification.subcode, Uint8Array.from(buf.subarray(p, vend)));
      }
      st.errors.push(e.message);
      st.level = Math.max(st.level, spec.onError === 'treat-as-withdraw' ? 2 : 1);
    }
    p = vend;
  }

  const attrs = st.attrs;
  if (unknown) attrs.unknown = unknown;

  // RFC 6793 section 4.2.3: reconstruct the real path on a 2-octet session.
  if (!opts.as4) {
    let useAs4 = true;
    if (attrs.aggregator !== undefined) {
      if (attrs.aggregator.asn !== AS_TRANS) useAs4 = false;
      else if (st.as4Aggregator) attrs.aggregator = st.as4Aggregator;
    }
    if (useAs4 && st.as4Path && attrs.asPath) attrs.asPath = mergeAs4Path(attrs.asPath, st.as4Path);
  }

  return {
    attributes: attrs,
    ...(st.mpReach ? { mpReach: st.mpReach } : {}),
    ...(st.mpUnreach ? { mpUnreach: st.mpUnreach } : {}),
    level: st.level,
    errors: st.errors,
  };
}

function pathCount(path: readonly AsPathSegment[]): number {
  let n = 0;
  for (const s of path) {
    if (s.type === 'sequence') n += s.asns.length;
    else if (s.type === 'set') n += 1;
  }
  return n;
}

/** RFC 6793 4.2.3: leading ASes of AS_PATH (keeping confed segments) followed by AS4_PATH. */
export function mergeAs4Path(asPath: readonly AsPathSegment[], as4Path: readonly AsPathSegment[]): AsPathSegment[] {
  const n2 = pathCount(asPath);
  const n4 = pathCount(as4Path);
  if (n2 < n4) return asPath.slice();
  let take = n2 - n4;
  const out: AsPathSegment[] = [];
  for (const s of asPath) {
    if (isConfed(s)) {
      out.push(s);
    } else if (take > 0) {
      if (s.type === 'set') {
        out.push(s);
        take -= 1;
      } else {
        const k = Math.min(take, s.asns.length);
        out.push(k === s.asns.length ? s : { type: s.type, asns: s.asns.slice(0, k) });
        take -= k;
      }
    }
  }
  for (const s of as4Path) out.push(s);
  return out;
}

/** Nlri list helper used by UPDATE decoding for the classic fields. */
export function decodeIpv4Field(buf: Buffer, start: number, end: number, opts: CodecOptions): Nlri[] {
  const f: AfiSafi = 'ipv4-unicast';
  return decodePrefixes(buf, start, end, 1, opts.addPath?.has(f) ?? false, ErrorCode.UPDATE, UpdateSubcode.INVALID_NETWORK_FIELD);
}
