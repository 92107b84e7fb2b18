/**
 * BGP-4 codec (src/bgp/codec): round-trip properties for every message type and attribute,
 * framing at every split offset, "random or mutated bytes only ever raise BgpError", every
 * RFC 7606 case the decoder implements (built byte by byte, annotated), packing, End-of-RIB,
 * capability negotiation, fixture replay and a throughput print.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import {
  AS_TRANS,
  BgpEncodeError,
  BgpError,
  decodeMessage,
  encodeMessage,
  endOfRib,
  endOfRibFamily,
  formatIPv6,
  Framer,
  isEndOfRib,
  negotiate,
  codecOptions,
  packUpdates,
  shutdownCommunication,
} from '../../src/bgp/codec/index.ts';
import { decodePrefixes } from '../../src/bgp/codec/prefixes.ts';
import type {
  AfiSafi,
  AsPathSegment,
  BgpMessage,
  Capabilities,
  CodecOptions,
  Nlri,
  NotificationMessage,
  OpenMessage,
  PathAttributes,
  UpdateMessage,
} from '../../src/bgp/types.ts';

// ---------------------------------------------------------------------------------------------
// Helpers: building raw messages byte by byte

const MARKER = Buffer.alloc(16, 0xff);

function frame(type: number, body: Buffer | number[]): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(19 + b.length);
  return Buffer.concat([MARKER, len, Buffer.from([type]), b]);
}

/** One path attribute: flags, code, 1- or 2-octet length (by the extended-length flag), value. */
function attr(flags: number, code: number, value: number[] | Buffer): Buffer {
  const v = Buffer.isBuffer(value) ? value : Buffer.from(value);
  if (flags & 0x10) {
    const h = Buffer.from([flags, code, 0, 0]);
    h.writeUInt16BE(v.length, 2);
    return Buffer.concat([h, v]);
  }
  return Buffer.concat([Buffer.from([flags, code, v.length]), v]);
}

/** An UPDATE from its three parts. */
function rawUpdate(parts: { withdrawn?: number[]; attrs?: Buffer[]; nlri?: number[] }): Buffer {
  const w = Buffer.from(parts.withdrawn ?? []);
  const a = Buffer.concat(parts.attrs ?? []);
  const n = Buffer.from(parts.nlri ?? []);
  const wl = Buffer.alloc(2);
  wl.writeUInt16BE(w.length);
  const tl = Buffer.alloc(2);
  tl.writeUInt16BE(a.length);
  return frame(2, Buffer.concat([wl, w, tl, a, n]));
}

const u32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const u16 = (v: number): number[] => [(v >> 8) & 0xff, v & 0xff];

// Well-formed mandatory attributes for a 4-octet session.
const ORIGIN_IGP = attr(0x40, 1, [0]);
const AS_PATH_65001 = attr(0x40, 2, [2, 1, ...u32(65001)]); // one AS_SEQUENCE of one ASN
const NEXT_HOP_10_0_0_1 = attr(0x40, 3, [10, 0, 0, 1]);
const MANDATORY = [ORIGIN_IGP, AS_PATH_65001, NEXT_HOP_10_0_0_1];
const NLRI_10_1_0_0_16 = [16, 10, 1];

/** BGP_FUZZ_SCALE=50 multiplies the robustness runs (for a long local fuzz). */
const FUZZ = Number(process.env.BGP_FUZZ_SCALE ?? 1);

const AS4: CodecOptions = { as4: true };
const AS4_IBGP: CodecOptions = { as4: true, ibgp: true };

function decodeUpdate(buf: Buffer, opts: CodecOptions = AS4): UpdateMessage {
  const m = decodeMessage(buf, opts);
  assert.equal(m.type, 'update');
  return m as UpdateMessage;
}

function assertBgpError(fn: () => unknown, code: number, subcode: number): BgpError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof BgpError, `expected BgpError, got ${String(e)}`);
    assert.equal(e.code, 'E_BGP');
    assert.deepEqual([e.notification.code, e.notification.subcode], [code, subcode], e.message);
    return e;
  }
  assert.fail(`expected BgpError ${code}/${subcode}`);
}

/** Only BgpError may escape; returns the message or undefined. */
function decodeOnlyBgpError(buf: Buffer, opts: CodecOptions): BgpMessage | undefined {
  try {
    return decodeMessage(buf, opts);
  } catch (e) {
    if (e instanceof BgpError) return undefined;
    throw e;
  }
}

/** fast-check builds null-prototype records; deepStrictEqual compares prototypes. */
function plain<T>(v: T): T {
  if (Array.isArray(v)) return v.map(plain) as T;
  if (v instanceof Uint8Array || v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)])) as T;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const arbU32 = fc.integer({ min: 0, max: 0xffffffff });
const arbAsn = fc.oneof(fc.integer({ min: 1, max: 0xffff }), arbU32, fc.constant(AS_TRANS));
const arbIPv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const arbUnicastIPv4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const arbIPv6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => ipaddr.fromByteArray(Array.from(b)).toString());

function maskBytes(bytes: Uint8Array, len: number): number[] {
  return Array.from(bytes, (b, i) => {
    const bits = len - 8 * i;
    return bits >= 8 ? b : bits <= 0 ? 0 : b & (0xff00 >> bits);
  });
}

const arbPrefix4 = fc
  .tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }))
  .map(([b, len]) => `${maskBytes(b, len).join('.')}/${len}`);
const arbPrefix6 = fc
  .tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }))
  .map(([b, len]) => `${ipaddr.fromByteArray(maskBytes(b, len)).toString()}/${len}`);

function arbNlri(afi: 4 | 6, addPath: boolean, max = 20): fc.Arbitrary<Nlri[]> {
  const p = afi === 4 ? arbPrefix4 : arbPrefix6;
  const one: fc.Arbitrary<Nlri> = addPath ? fc.record({ prefix: p, pathId: arbU32 }) : fc.record({ prefix: p });
  return fc.array(one, { maxLength: max });
}

const arbSegment = (types: AsPathSegment['type'][]): fc.Arbitrary<AsPathSegment> =>
  fc.record({ type: fc.constantFrom(...types), asns: fc.array(arbAsn, { minLength: 1, maxLength: 12 }) });
/** Confederation segments only at the front, as on the wire. */
const arbAsPath: fc.Arbitrary<AsPathSegment[]> = fc
  .tuple(
    fc.array(arbSegment(['confed-sequence', 'confed-set']), { maxLength: 2 }),
    fc.array(arbSegment(['sequence', 'set']), { maxLength: 4 }),
  )
  .map(([c, n]) => [...c, ...n]);

const KNOWN_ATTRS = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32]);
const arbUnknownAttrs = fc.uniqueArray(
  fc.record({
    flags: fc.constant(0xe0),
    code: fc.integer({ min: 0, max: 255 }).filter((c) => !KNOWN_ATTRS.has(c)),
    value: fc.uint8Array({ maxLength: 300 }),
  }),
  { maxLength: 3, selector: (u) => u.code },
);

const arbAttributes: fc.Arbitrary<PathAttributes> = fc.record(
  {
    origin: fc.constantFrom(0 as const, 1 as const, 2 as const),
    asPath: arbAsPath,
    nextHop: arbUnicastIPv4,
    med: arbU32,
    localPref: arbU32,
    atomicAggregate: fc.constant(true),
    aggregator: fc.record({ asn: arbAsn, address: arbIPv4 }),
    communities: fc.array(arbU32, { minLength: 1, maxLength: 20 }),
    largeCommunities: fc.array(fc.tuple(arbU32, arbU32, arbU32), { minLength: 1, maxLength: 10 }),
    originatorId: arbIPv4,
    clusterList: fc.array(arbIPv4, { minLength: 1, maxLength: 5 }),
    unknown: arbUnknownAttrs.filter((u) => u.length > 0),
  },
  { requiredKeys: [] },
);

const arbOpts: fc.Arbitrary<CodecOptions> = fc.record({
  as4: fc.boolean(),
  ibgp: fc.constant(true),
  addPath: fc.subarray<AfiSafi>(['ipv4-unicast', 'ipv6-unicast']).map((a) => new Set(a)),
});

const arbUpdate = (opts: CodecOptions): fc.Arbitrary<UpdateMessage> => {
  const ap4 = opts.addPath?.has('ipv4-unicast') ?? false;
  const ap6 = opts.addPath?.has('ipv6-unicast') ?? false;
  const arbMpReach = fc.oneof(
    fc.record({ afiSafi: fc.constant<AfiSafi>('ipv6-unicast'), nextHop: arbIPv6, nlri: arbNlri(6, ap6) }),
    fc.record({ afiSafi: fc.constant<AfiSafi>('ipv6-unicast'), nextHop: arbIPv6, linkLocalNextHop: arbIPv6, nlri: arbNlri(6, ap6) }),
    fc.record({ afiSafi: fc.constant<AfiSafi>('ipv4-unicast'), nextHop: arbIPv4, nlri: arbNlri(4, ap4) }),
  );
  const arbMpUnreach = fc.oneof(
    fc.record({ afiSafi: fc.constant<AfiSafi>('ipv6-unicast'), withdrawn: arbNlri(6, ap6) }),
    fc.record({ afiSafi: fc.constant<AfiSafi>('ipv4-unicast'), withdrawn: arbNlri(4, ap4) }),
  );
  return fc
    .record(
      {
        withdrawn: arbNlri(4, ap4),
        nlri: arbNlri(4, ap4),
        attributes: arbAttributes,
        mandatory: fc.record({ origin: fc.constantFrom(0 as const, 1 as const), asPath: arbAsPath, nextHop: arbUnicastIPv4 }),
        mpReach: arbMpReach,
        mpUnreach: arbMpUnreach,
      },
      { requiredKeys: ['withdrawn', 'nlri', 'attributes', 'mandatory'] },
    )
    .map(({ mandatory, ...r }) => {
      // With NLRI the well-known mandatory attributes must be there (else treat-as-withdraw).
      const needs = r.nlri.length > 0 || r.mpReach !== undefined;
      const attributes = needs ? { ...mandatory, ...r.attributes } : r.attributes;
      return { type: 'update' as const, ...r, attributes };
    });
};

const isConfed = (s: AsPathSegment): boolean => s.type === 'confed-sequence' || s.type === 'confed-set';
function needsAs4(path: readonly AsPathSegment[] | undefined): boolean {
  return !!path?.some((s) => !isConfed(s) && s.asns.some((a) => a > 0xffff));
}
const trans = (s: AsPathSegment): AsPathSegment => ({ type: s.type, asns: s.asns.map((x) => (x > 0xffff ? AS_TRANS : x)) });

/**
 * What a round trip must return. Unknown attributes come back with the partial bit set.
 * On a 2-octet session, RFC 6793 4.2.3: 4-octet ASNs in confederation segments become AS_TRANS,
 * and an AGGREGATOR whose ASN is not AS_TRANS means AS4_PATH
 * is ignored, so the path keeps AS_TRANS in place of 4-octet ASNs.
 */
function expectedAttributes(a: PathAttributes, opts: CodecOptions): PathAttributes {
  let out: PathAttributes = a;
  if (a.unknown) out = { ...out, unknown: a.unknown.map((u) => ({ ...u, flags: u.flags | 0x20 })) };
  if (!opts.as4 && a.asPath) {
    // 4-octet confederation member ASNs cannot cross a 2-octet session (not carried in AS4_PATH).
    out = { ...out, asPath: a.asPath.map((s) => (isConfed(s) ? trans(s) : s)) };
    if (a.aggregator && a.aggregator.asn <= 0xffff && a.aggregator.asn !== AS_TRANS && needsAs4(a.asPath)) {
      out = { ...out, asPath: a.asPath.map(trans) };
    }
  }
  return out;
}

const FAMILIES: AfiSafi[] = ['ipv4-unicast', 'ipv6-unicast'];
const KNOWN_CAPS = new Set([1, 2, 64, 65, 69, 70]);
const arbCapabilities: fc.Arbitrary<Capabilities> = fc.record(
  {
    multiprotocol: fc.subarray(FAMILIES),
    as4: arbU32,
    routeRefresh: fc.constant(true),
    enhancedRouteRefresh: fc.constant(true),
    gracefulRestart: fc.record({
      restartTimeSec: fc.integer({ min: 0, max: 4095 }),
      restarting: fc.boolean(),
      families: fc.uniqueArray(fc.record({ afiSafi: fc.constantFrom(...FAMILIES), forwardingPreserved: fc.boolean() }), {
        selector: (f) => f.afiSafi,
        maxLength: 2,
      }),
    }),
    addPath: fc
      .uniqueArray(
        fc.record({ afiSafi: fc.constantFrom(...FAMILIES), send: fc.boolean(), receive: fc.boolean() }).filter((f) => f.send || f.receive),
        { selector: (f) => f.afiSafi, minLength: 1, maxLength: 2 },
      ),
    unknown: fc.array(
      fc.record({
        code: fc.integer({ min: 0, max: 255 }).filter((c) => !KNOWN_CAPS.has(c)),
        value: fc.uint8Array({ maxLength: 16 }),
      }),
      { minLength: 1, maxLength: 4 },
    ),
  },
  { requiredKeys: ['multiprotocol'] },
);

const arbOpen: fc.Arbitrary<OpenMessage> = fc.record({
  type: fc.constant('open' as const),
  version: fc.constant(4),
  myAs: fc.integer({ min: 0, max: 0xffff }),
  holdTime: fc.oneof(fc.constant(0), fc.integer({ min: 3, max: 0xffff })),
  bgpId: arbIPv4.filter((a) => a !== '0.0.0.0'),
  capabilities: arbCapabilities,
});

const arbNotification: fc.Arbitrary<NotificationMessage> = fc.oneof(
  fc
    .record({
      code: fc.integer({ min: 1, max: 6 }),
      subcode: fc.nat(255),
      data: fc.uint8Array({ maxLength: 64 }),
    })
    .filter((n) => !(n.code === 6 && (n.subcode === 2 || n.subcode === 4)))
    .map((n) => ({ type: 'notification' as const, ...n })),
  fc.record({ subcode: fc.constantFrom(2, 4), text: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 80 }) }).map(({ subcode, text }) => ({
    type: 'notification' as const,
    code: 6,
    subcode,
    data: shutdownCommunication(text),
    shutdownText: text,
  })),
);

const arbRouteRefresh = fc.record({
  type: fc.constant('route-refresh' as const),
  afiSafi: fc.constantFrom(...FAMILIES),
  subtype: fc.nat(255),
});

const arbMessage = (opts: CodecOptions): fc.Arbitrary<BgpMessage> =>
  fc.oneof(arbOpen, arbUpdate(opts), arbNotification, arbRouteRefresh, fc.constant({ type: 'keepalive' as const }));

/** Encode, and report whether it fit (random UPDATEs may exceed 4096 bytes). */
function tryEncode(m: BgpMessage, opts: CodecOptions): Buffer | undefined {
  try {
    return encodeMessage(m, opts);
  } catch (e) {
    if (e instanceof BgpEncodeError && /exceeds the maximum message size/.test(e.message)) return undefined;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------

describe('round trips', () => {
  test('UPDATE: every attribute, IPv4/IPv6, with and without ADD-PATH, as4 true/false', () => {
    fc.assert(
      fc.property(
        arbOpts.chain((opts) => fc.tuple(fc.constant(opts), arbUpdate(opts))),
        ([opts, u]) => {
          const buf = tryEncode(u, opts);
          fc.pre(buf !== undefined);
          const d = decodeUpdate(buf!, opts);
          assert.deepStrictEqual(d, plain({ ...u, attributes: expectedAttributes(u.attributes, opts) }));
        },
      ),
      { numRuns: 1500 },
    );
  });

  test('every attribute alone round-trips (as4 true and false)', () => {
    const keys: (keyof PathAttributes)[] = [
      'origin', 'asPath', 'nextHop', 'med', 'localPref', 'atomicAggregate', 'aggregator',
      'communities', 'largeCommunities', 'originatorId', 'clusterList', 'unknown',
    ];
    for (const key of keys) {
      fc.assert(
        fc.property(arbAttributes.filter((a) => a[key] !== undefined), fc.boolean(), (a, as4) => {
          const opts: CodecOptions = { as4, ibgp: true };
          const attributes = { [key]: a[key] } as PathAttributes;
          const u: UpdateMessage = { type: 'update', withdrawn: [], nlri: [], attributes };
          const d = decodeUpdate(encodeMessage(u, opts), opts);
          assert.deepStrictEqual(d.attributes, plain(expectedAttributes(attributes, opts)), key);
          assert.equal(d.handling, undefined);
        }),
        { numRuns: 200 },
      );
    }
  });

  test('OPEN with arbitrary capabilities', () => {
    fc.assert(
      fc.property(arbOpen, (o) => {
        assert.deepStrictEqual(decodeMessage(encodeMessage(o, AS4), AS4), plain(o));
      }),
      { numRuns: 1000 },
    );
  });

  test('OPEN: My AS above 65535 is sent as AS_TRANS', () => {
    const o: OpenMessage = { type: 'open', version: 4, myAs: 4200000000, holdTime: 90, bgpId: '1.1.1.1', capabilities: { multiprotocol: [], as4: 4200000000 } };
    const d = decodeMessage(encodeMessage(o, AS4), AS4) as OpenMessage;
    assert.equal(d.myAs, AS_TRANS);
    assert.equal(d.capabilities.as4, 4200000000);
  });

  test('NOTIFICATION (with RFC 9003 shutdown communication), KEEPALIVE, ROUTE-REFRESH', () => {
    fc.assert(
      fc.property(fc.oneof(arbNotification, arbRouteRefresh, fc.constant({ type: 'keepalive' as const })), (m) => {
        assert.deepStrictEqual(decodeMessage(encodeMessage(m, AS4), AS4), plain(m));
      }),
      { numRuns: 1000 },
    );
  });

  test('RFC 9003: a long shutdown communication is cut at 255 octets on a character boundary', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 100, maxLength: 300 }), (text) => {
        const m: NotificationMessage = { type: 'notification', code: 6, subcode: 2, data: new Uint8Array(0), shutdownText: text };
        const d = decodeMessage(encodeMessage(m, AS4), AS4) as NotificationMessage;
        const bytes = new TextEncoder().encode(text).length;
        assert.ok(d.data.length <= 256);
        if (bytes <= 255) assert.equal(d.shutdownText, text);
        else assert.ok(text.startsWith(d.shutdownText ?? ''), 'prefix of the original');
      }),
      { numRuns: 300 },
    );
  });

  test('decoded prefixes are canonical text built from the bytes (every IPv4 length, digit counts)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(0, 9, 10, 99, 100, 255), fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(32)), { minLength: 1, maxLength: 20 }), (raw) => {
        const parts: number[] = [];
        const want: string[] = [];
        for (const [a, b, c, d, len] of raw) {
          const addr = [a, b, c, d];
          const nb = (len + 7) >> 3;
          const masked = addr.map((x, i) => (i < nb ? x & (i === nb - 1 && len % 8 ? (0xff00 >> len % 8) & 0xff : 0xff) : 0));
          parts.push(len, ...masked.slice(0, nb));
          want.push(`${masked.join('.')}/${len}`);
        }
        const got = decodePrefixes(Buffer.from(parts), 0, parts.length, 1, false, 3, 10).map((n) => n.prefix);
        assert.deepEqual(got, want);
      }),
      { numRuns: 500 },
    );
    const v6 = decodePrefixes(Buffer.from([64, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1]), 0, 9, 2, false, 3, 10);
    assert.deepEqual(v6, [{ prefix: '2001:db8:0:1::/64' }]);
  });

  test('IPv6 formatting matches ipaddr.js (RFC 5952)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.nat(8), (b, zeros) => {
        const c = Uint8Array.from(b);
        c.fill(0, 2 * zeros, 2 * zeros + 6); // make zero runs likely
        assert.equal(formatIPv6(c, 0), ipaddr.fromByteArray(Array.from(c)).toString());
      }),
      { numRuns: 2000 },
    );
  });
});

describe('framing', () => {
  const stream = (msgs: BgpMessage[], opts: CodecOptions): Buffer => Buffer.concat(msgs.map((m) => tryEncode(m, opts) ?? Buffer.alloc(0)));

  test('a stream split at every byte offset yields the same messages', () => {
    const opts: CodecOptions = { as4: true, ibgp: true };
    fc.assert(
      fc.property(fc.array(arbMessage(opts), { minLength: 1, maxLength: 4 }), (msgs) => {
        const all = stream(msgs, opts);
        const whole = new Framer().push(all).map((f) => decodeMessage(f, opts));
        for (let k = 0; k <= all.length; k++) {
          const f = new Framer();
          const got = [...f.push(all.subarray(0, k)), ...f.push(all.subarray(k))].map((x) => decodeMessage(x, opts));
          assert.deepStrictEqual(got, whole);
          assert.equal(f.buffered, 0);
        }
      }),
      { numRuns: 40 },
    );
  });

  test('byte-at-a-time and random chunking', () => {
    const opts: CodecOptions = { as4: false, ibgp: true };
    fc.assert(
      fc.property(fc.array(arbMessage(opts), { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1 }), (msgs, sizes) => {
        const all = stream(msgs, opts);
        const expected = new Framer().push(all).map((x) => x.toString('hex'));
        const f = new Framer();
        const got: string[] = [];
        for (let p = 0, i = 0; p < all.length; i++) {
          const n = sizes[i % sizes.length];
          for (const m of f.push(all.subarray(p, p + n))) got.push(m.toString('hex'));
          p += n;
        }
        assert.deepStrictEqual(got, expected);
        const g = new Framer();
        const bytes: string[] = [];
        for (let p = 0; p < all.length; p++) for (const m of g.push(all.subarray(p, p + 1))) bytes.push(m.toString('hex'));
        assert.deepStrictEqual(bytes, expected);
      }),
      { numRuns: 100 },
    );
  });

  test('bad marker and bad lengths are header errors', () => {
    const ka = encodeMessage({ type: 'keepalive' }, AS4);
    const bad = Buffer.from(ka);
    bad[3] = 0;
    assertBgpError(() => new Framer().push(bad.subarray(0, 16)), 1, 1); // detected from 16 bytes on
    const short = Buffer.from(ka);
    short.writeUInt16BE(18, 16);
    assertBgpError(() => new Framer().push(short), 1, 2);
    const long = Buffer.from(ka);
    long.writeUInt16BE(4097, 16);
    const e = assertBgpError(() => new Framer().push(long), 1, 2);
    assert.deepEqual(Array.from(e.notification.data), [0x10, 0x01]);
  });
});

describe('robustness: only BgpError escapes', () => {
  const optsList: CodecOptions[] = [
    { as4: true },
    { as4: false, ibgp: true },
    { as4: true, addPath: new Set<AfiSafi>(['ipv4-unicast', 'ipv6-unicast']) },
  ];

  test('random bodies behind a valid header', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.uint8Array({ maxLength: 200 }), fc.constantFrom(...optsList), (type, body, opts) => {
        decodeOnlyBgpError(frame(type, Buffer.from(body)), opts);
      }),
      { numRuns: 3000 * FUZZ },
    );
  });

  test('random bytes into the framer then the decoder', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, withMarker) => {
        const input = withMarker ? Buffer.concat([MARKER, Buffer.from(bytes)]) : Buffer.from(bytes);
        try {
          for (const f of new Framer().push(input)) decodeOnlyBgpError(f, AS4);
        } catch (e) {
          if (!(e instanceof BgpError)) throw e;
        }
      }),
      { numRuns: 2000 * FUZZ },
    );
  });

  const arbMutation = fc.array(
    fc.record({ kind: fc.constantFrom('flip', 'insert', 'delete', 'set'), at: fc.nat(), value: fc.nat(255) }),
    { minLength: 1, maxLength: 4 },
  );

  function mutate(buf: Buffer, muts: { kind: string; at: number; value: number }[], fixLength: boolean): Buffer {
    let b = Buffer.from(buf);
    for (const m of muts) {
      // keep the marker mostly intact so the body gets exercised
      const at = 16 + (m.at % Math.max(1, b.length - 16));
      if (m.kind === 'flip' && at < b.length) b[at] ^= 1 << (m.value % 8);
      else if (m.kind === 'set' && at < b.length) b[at] = m.value;
      else if (m.kind === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from([m.value]), b.subarray(at)]);
      else if (m.kind === 'delete' && at < b.length) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    }
    if (fixLength && b.length >= 19 && b.length <= 0xffff) b.writeUInt16BE(b.length, 16);
    return b;
  }

  test('mutated valid messages (flip / set / insert / delete bytes)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...optsList).chain((opts) => fc.tuple(fc.constant(opts), arbMessage(opts))),
        arbMutation,
        fc.boolean(),
        ([opts, msg], muts, fixLength) => {
          const buf = tryEncode(msg, opts);
          fc.pre(buf !== undefined);
          const m = mutate(buf!, muts, fixLength);
          const d = decodeOnlyBgpError(m, opts);
          if (d) reencode(d, opts);
          // the other session flavours must cope too
          for (const o of optsList) decodeOnlyBgpError(m, o);
        },
      ),
      { numRuns: 4000 * FUZZ },
    );
  });

  /**
   * Whatever decodes cleanly can be encoded again and decodes to the same thing (the session
   * re-advertises what it received), modulo the partial bit on unknown attributes.
   */
  function reencode(d: BgpMessage, opts: CodecOptions): void {
    if (d.type === 'update' && d.handling) return;
    const b = tryEncode(d, opts);
    if (b === undefined) return;
    const again = decodeMessage(b, opts);
    const expected = d.type === 'update' ? { ...d, attributes: expectedAttributes(d.attributes, opts) } : d;
    assert.deepStrictEqual(again, expected);
  }

  test('crash fixtures in tests/fixtures/bgp/*.hex replay without non-BgpError throws', () => {
    const dir = fileURLToPath(new URL('../fixtures/bgp/', import.meta.url));
    const files = readdirSync(dir).filter((f) => f.endsWith('.hex'));
    assert.ok(files.length > 0);
    for (const file of files) {
      const hex = readFileSync(join(dir, file), 'utf8')
        .split('\n')
        .map((l) => l.replace(/#.*/, ''))
        .join('')
        .replace(/\s+/g, '');
      const bytes = Buffer.from(hex, 'hex');
      for (const opts of optsList) {
        try {
          for (const f of new Framer().push(bytes)) decodeOnlyBgpError(f, opts);
        } catch (e) {
          assert.ok(e instanceof BgpError, `${file}: ${String(e)}`);
        }
      }
    }
  });
});

describe('header, OPEN, NOTIFICATION and ROUTE-REFRESH errors', () => {
  test('unknown message type -> 1/3 with the type as data', () => {
    const e = assertBgpError(() => decodeMessage(frame(6, []), AS4), 1, 3);
    assert.deepEqual(Array.from(e.notification.data), [6]);
  });
  test('KEEPALIVE with a body -> 1/2', () => void assertBgpError(() => decodeMessage(frame(4, [0]), AS4), 1, 2));
  test('OPEN shorter than 29 -> 1/2', () => void assertBgpError(() => decodeMessage(frame(1, [4, 0, 1]), AS4), 1, 2));
  const openBody = (version: number, hold: number, id: number[], params: number[]): number[] => [
    version, ...u16(65001), ...u16(hold), ...id, params.length, ...params,
  ];
  test('OPEN version 3 -> 2/1 with the highest supported version', () => {
    const e = assertBgpError(() => decodeMessage(frame(1, openBody(3, 90, [1, 1, 1, 1], [])), AS4), 2, 1);
    assert.deepEqual(Array.from(e.notification.data), [0, 4]);
  });
  test('OPEN hold time 1 or 2 -> 2/6', () => void assertBgpError(() => decodeMessage(frame(1, openBody(4, 2, [1, 1, 1, 1], [])), AS4), 2, 6));
  test('OPEN BGP identifier 0.0.0.0 -> 2/3', () => void assertBgpError(() => decodeMessage(frame(1, openBody(4, 90, [0, 0, 0, 0], [])), AS4), 2, 3));
  test('OPEN optional parameter other than capabilities -> 2/4', () =>
    void assertBgpError(() => decodeMessage(frame(1, openBody(4, 90, [1, 1, 1, 1], [1, 1, 0])), AS4), 2, 4));
  test('OPEN optional parameters length inconsistent -> 2/0', () => {
    const body = openBody(4, 90, [1, 1, 1, 1], [2, 2, 2, 0]);
    body[9] = 9;
    assertBgpError(() => decodeMessage(frame(1, body), AS4), 2, 0);
  });
  test('OPEN capability overrunning its parameter -> 2/0', () =>
    void assertBgpError(() => decodeMessage(frame(1, openBody(4, 90, [1, 1, 1, 1], [2, 3, 65, 4, 0])), AS4), 2, 0));
  test('OPEN: unknown capabilities and unsupported multiprotocol families are kept verbatim', () => {
    const params = [2, 12, /* MP AFI 25 SAFI 70 */ 1, 4, 0, 25, 0, 70, /* cap 131, 2 bytes */ 131, 2, 0xab, 0xcd, /* route refresh */ 2, 0];
    const o = decodeMessage(frame(1, openBody(4, 90, [1, 1, 1, 1], params)), AS4) as OpenMessage;
    assert.deepStrictEqual(o.capabilities, {
      multiprotocol: [],
      routeRefresh: true,
      unknown: [
        { code: 1, value: Uint8Array.of(0, 25, 0, 70) },
        { code: 131, value: Uint8Array.of(0xab, 0xcd) },
      ],
    });
  });
  test('NOTIFICATION Cease/2 with invalid UTF-8 keeps the data, no text', () => {
    const n = decodeMessage(frame(3, [6, 2, 2, 0xc3, 0x28]), AS4) as NotificationMessage;
    assert.equal(n.shutdownText, undefined);
    assert.deepEqual(Array.from(n.data), [2, 0xc3, 0x28]);
  });
  test('NOTIFICATION: a decoded shutdown communication with trailing data re-encodes byte for byte', () => {
    const raw = frame(3, [6, 2, 2, 0x68, 0x69, 0xaa, 0xbb]);
    const n = decodeMessage(raw, AS4) as NotificationMessage;
    assert.equal(n.shutdownText, 'hi');
    assert.deepEqual(encodeMessage(n, AS4), raw);
  });
  test('NOTIFICATION Cease/4 shutdown length beyond the data -> no text', () => {
    const n = decodeMessage(frame(3, [6, 4, 9, 0x41]), AS4) as NotificationMessage;
    assert.equal(n.shutdownText, undefined);
  });
  test('ROUTE-REFRESH for an unsupported family is flagged, not an error', () => {
    const r = decodeMessage(frame(5, [0, 25, 0, 70]), AS4);
    assert.deepStrictEqual(r, { type: 'route-refresh', afiSafi: 'ipv4-unicast', subtype: 0, unsupportedFamily: { afi: 25, safi: 70 } });
    assert.deepStrictEqual(decodeMessage(encodeMessage(r, AS4), AS4), r);
  });
  test('ROUTE-REFRESH of the wrong length -> 7/1', () => void assertBgpError(() => decodeMessage(frame(5, [0, 1, 0, 1, 0]), AS4), 7, 1));
});

describe('RFC 7606 UPDATE error handling', () => {
  const withdraw = (u: UpdateMessage, re?: RegExp): void => {
    assert.equal(u.handling, 'treat-as-withdraw', JSON.stringify(u.errors));
    if (re) assert.ok(u.errors!.some((e) => re.test(e)), JSON.stringify(u.errors));
  };
  const discard = (u: UpdateMessage, re?: RegExp): void => {
    assert.equal(u.handling, 'attribute-discard', JSON.stringify(u.errors));
    if (re) assert.ok(u.errors!.some((e) => re.test(e)), JSON.stringify(u.errors));
  };
  const withAttrs = (extra: Buffer[], base = MANDATORY): Buffer => rawUpdate({ attrs: [...base, ...extra], nlri: NLRI_10_1_0_0_16 });

  test('well-formed baseline decodes cleanly', () => {
    const u = decodeUpdate(withAttrs([]));
    assert.equal(u.handling, undefined);
    assert.deepStrictEqual(u.nlri, [{ prefix: '10.1.0.0/16' }]);
  });

  // --- session reset (BgpError) ---
  test('withdrawn routes length overruns the message -> 3/1', () => {
    const b = rawUpdate({ withdrawn: [8, 10] });
    b.writeUInt16BE(50, 19);
    assertBgpError(() => decodeMessage(b, AS4), 3, 1);
  });
  test('total path attribute length overruns the message -> 3/1', () => {
    const b = rawUpdate({ attrs: MANDATORY });
    b.writeUInt16BE(500, 21);
    assertBgpError(() => decodeMessage(b, AS4), 3, 1);
  });
  test('NLRI prefix length > 32 -> 3/10', () =>
    void assertBgpError(() => decodeMessage(rawUpdate({ attrs: MANDATORY, nlri: [33, 10, 1, 1, 1, 0] }), AS4), 3, 10));
  test('NLRI prefix with host bits set -> 3/10', () =>
    void assertBgpError(() => decodeMessage(rawUpdate({ attrs: MANDATORY, nlri: [8, 10, 23, 10, 1, 1] }), AS4), 3, 10));
  test('NLRI truncated -> 3/10', () => void assertBgpError(() => decodeMessage(rawUpdate({ attrs: MANDATORY, nlri: [24, 10, 1] }), AS4), 3, 10));
  test('withdrawn prefix with host bits set -> 3/10', () => void assertBgpError(() => decodeMessage(rawUpdate({ withdrawn: [7, 0xff] }), AS4), 3, 10));
  test('ADD-PATH: truncated path id -> 3/10', () =>
    void assertBgpError(() => decodeMessage(rawUpdate({ withdrawn: [0, 0, 1] }), { as4: true, addPath: new Set(['ipv4-unicast']) }), 3, 10));
  test('unrecognized well-known attribute -> 3/2 with the attribute as data', () => {
    const e = assertBgpError(() => decodeMessage(withAttrs([attr(0x40, 99, [1, 2])]), AS4), 3, 2);
    assert.deepEqual(Array.from(e.notification.data), [0x40, 99, 2, 1, 2]);
  });
  test('MP_REACH_NLRI twice -> 3/1', () => {
    const mp = attr(0x80, 14, [0, 2, 1, 16, ...new Array(16).fill(0x20), 0]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp, mp, ORIGIN_IGP, AS_PATH_65001] }), AS4), 3, 1);
  });
  test('MP_UNREACH_NLRI twice -> 3/1', () => {
    const mp = attr(0x80, 15, [0, 2, 1]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp, mp] }), AS4), 3, 1);
  });
  test('MP_REACH_NLRI IPv6 next hop length 8 -> session reset 3/9 (RFC 7606 7.11)', () => {
    const mp = attr(0x80, 14, [0, 2, 1, 8, ...new Array(8).fill(1), 0]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp, ORIGIN_IGP, AS_PATH_65001] }), AS4), 3, 9);
  });
  test('MP_REACH_NLRI truncated before the next hop -> session reset', () => {
    const mp = attr(0x80, 14, [0, 2]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp, ORIGIN_IGP, AS_PATH_65001] }), AS4), 3, 5);
  });
  test('MP_REACH_NLRI IPv6 prefix length 129 -> 3/10 (RFC 7606 5.3)', () => {
    const mp = attr(0x80, 14, [0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, ...new Array(12).fill(0), 0, 129, ...new Array(17).fill(0)]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp, ORIGIN_IGP, AS_PATH_65001] }), AS4), 3, 10);
  });
  test('MP_UNREACH_NLRI with a truncated prefix -> 3/10', () => {
    const mp = attr(0x80, 15, [0, 2, 1, 64, 0x20, 1]);
    assertBgpError(() => decodeMessage(rawUpdate({ attrs: [mp] }), AS4), 3, 10);
  });

  // --- treat-as-withdraw ---
  test('ORIGIN undefined value / wrong length -> treat-as-withdraw', () => {
    withdraw(decodeUpdate(withAttrs([], [attr(0x40, 1, [3]), AS_PATH_65001, NEXT_HOP_10_0_0_1])), /ORIGIN/);
    withdraw(decodeUpdate(withAttrs([], [attr(0x40, 1, [0, 0]), AS_PATH_65001, NEXT_HOP_10_0_0_1])), /ORIGIN/);
  });
  test('AS_PATH: zero-length segment, unknown segment type, overrun, lone trailing octet -> treat-as-withdraw', () => {
    for (const v of [[2, 0], [5, 1, ...u32(1)], [2, 2, ...u32(1)], [2, 1, ...u32(1), 2]]) {
      withdraw(decodeUpdate(withAttrs([], [ORIGIN_IGP, attr(0x40, 2, v), NEXT_HOP_10_0_0_1])), /AS_PATH/);
    }
  });
  test('NEXT_HOP wrong length, 0.0.0.0, multicast -> treat-as-withdraw', () => {
    for (const v of [[10, 0, 0, 1, 0], [0, 0, 0, 0], [224, 0, 0, 5]]) {
      withdraw(decodeUpdate(withAttrs([], [ORIGIN_IGP, AS_PATH_65001, attr(0x40, 3, v)])), /NEXT_HOP/);
    }
  });
  test('MULTI_EXIT_DISC wrong length -> treat-as-withdraw', () => withdraw(decodeUpdate(withAttrs([attr(0x80, 4, [0, 0, 1])])), /MULTI_EXIT_DISC/));
  test('LOCAL_PREF wrong length on iBGP -> treat-as-withdraw', () =>
    withdraw(decodeUpdate(withAttrs([attr(0x40, 5, [0, 100])]), AS4_IBGP), /LOCAL_PREF/));
  test('COMMUNITIES length 0 or not a multiple of 4 -> treat-as-withdraw', () => {
    withdraw(decodeUpdate(withAttrs([attr(0xc0, 8, [])])), /COMMUNITIES/);
    withdraw(decodeUpdate(withAttrs([attr(0xc0, 8, [0, 0, 0, 1, 2])])), /COMMUNITIES/);
  });
  test('LARGE_COMMUNITIES not a multiple of 12 -> treat-as-withdraw (RFC 8092)', () =>
    withdraw(decodeUpdate(withAttrs([attr(0xc0, 32, new Array(13).fill(0))])), /LARGE_COMMUNITIES/));
  test('ORIGINATOR_ID / CLUSTER_LIST malformed -> treat-as-withdraw', () => {
    withdraw(decodeUpdate(withAttrs([attr(0x80, 9, [1, 2, 3])]), AS4_IBGP), /ORIGINATOR_ID/);
    withdraw(decodeUpdate(withAttrs([attr(0x80, 10, [1, 2, 3, 4, 5, 6])]), AS4_IBGP), /CLUSTER_LIST/);
  });
  test('flags conflicting with the attribute (ORIGIN marked optional) -> treat-as-withdraw', () =>
    withdraw(decodeUpdate(withAttrs([], [attr(0xc0, 1, [0]), AS_PATH_65001, NEXT_HOP_10_0_0_1])), /flags/));
  test('MP_REACH_NLRI with wrong flags but parseable -> treat-as-withdraw, its NLRI reported', () => {
    const mp = attr(0xc0, 14, [0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 1, 0, 32, 0x20, 1, 0xd, 0xb8]);
    const u = decodeUpdate(rawUpdate({ attrs: [mp, ORIGIN_IGP, AS_PATH_65001] }));
    withdraw(u, /flags/);
    assert.deepStrictEqual(u.mpReach, { afiSafi: 'ipv6-unicast', nextHop: '2001:db8::1', nlri: [{ prefix: '2001:db8::/32' }] });
  });
  test('attribute length overrunning the attribute list -> treat-as-withdraw, NLRI still located (RFC 7606 4)', () => {
    const bad = Buffer.from([0xc0, 8, 40, 0, 0, 0, 1]);
    const u = decodeUpdate(withAttrs([bad]));
    withdraw(u, /overruns/);
    assert.deepStrictEqual(u.nlri, [{ prefix: '10.1.0.0/16' }]);
  });
  test('fewer octets than an attribute header left -> treat-as-withdraw', () =>
    withdraw(decodeUpdate(withAttrs([Buffer.from([0xc0, 8])])), /too short/));
  test('missing well-known attributes with NLRI -> treat-as-withdraw (RFC 7606 3d)', () => {
    withdraw(decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP, AS_PATH_65001], nlri: NLRI_10_1_0_0_16 })), /NEXT_HOP/);
    withdraw(decodeUpdate(rawUpdate({ nlri: NLRI_10_1_0_0_16 })), /ORIGIN, AS_PATH, NEXT_HOP/);
    const mp = attr(0x80, 14, [0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 1, 0]);
    withdraw(decodeUpdate(rawUpdate({ attrs: [mp, AS_PATH_65001] })), /ORIGIN/);
  });
  test('withdrawals only, no attributes: clean', () => {
    const u = decodeUpdate(rawUpdate({ withdrawn: [16, 10, 1] }));
    assert.equal(u.handling, undefined);
    assert.deepStrictEqual(u.withdrawn, [{ prefix: '10.1.0.0/16' }]);
  });

  // --- attribute discard ---
  test('LOCAL_PREF from an eBGP peer -> attribute-discard (RFC 7606 7.5)', () => {
    const u = decodeUpdate(withAttrs([attr(0x40, 5, u32(100))]), AS4);
    discard(u, /LOCAL_PREF/);
    assert.equal(u.attributes.localPref, undefined);
  });
  test('ATOMIC_AGGREGATE with a value -> attribute-discard', () => {
    const u = decodeUpdate(withAttrs([attr(0x40, 6, [1])]));
    discard(u, /ATOMIC_AGGREGATE/);
    assert.equal(u.attributes.atomicAggregate, undefined);
  });
  test('AGGREGATOR wrong length (and wrong flags) -> attribute-discard', () => {
    discard(decodeUpdate(withAttrs([attr(0xc0, 7, [0, 0, 0, 1, 1, 1, 1])])), /AGGREGATOR/);
    discard(decodeUpdate(withAttrs([attr(0x40, 7, [0, 0, 0, 1, 1, 1, 1, 1])])), /AGGREGATOR: flags/);
  });
  test('repeated attribute: first kept, later discarded (RFC 7606 3g)', () => {
    const u = decodeUpdate(withAttrs([attr(0x80, 4, u32(5)), attr(0x80, 4, u32(7))]));
    discard(u, /repeated/);
    assert.equal(u.attributes.med, 5);
  });
  test('MP_REACH_NLRI for an unsupported AFI/SAFI is ignored', () => {
    const u = decodeUpdate(rawUpdate({ attrs: [attr(0x80, 14, [0, 25, 70, 4, 1, 1, 1, 1, 0]), ...MANDATORY] }));
    discard(u, /unsupported AFI 25/);
    assert.equal(u.mpReach, undefined);
  });
  test('AS4_PATH malformed or with confed segments (2-octet session) -> attribute-discard, AS_PATH kept', () => {
    const as2 = attr(0x40, 2, [2, 2, ...u16(1), ...u16(AS_TRANS)]);
    const nh = NEXT_HOP_10_0_0_1;
    for (const v of [[2, 0], [3, 1, ...u32(70000)]]) {
      const u = decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP, as2, nh, attr(0xc0, 17, v)], nlri: NLRI_10_1_0_0_16 }), { as4: false });
      discard(u, /AS4_PATH/);
      assert.deepStrictEqual(u.attributes.asPath, [{ type: 'sequence', asns: [1, AS_TRANS] }]);
    }
  });
  test('AS4_AGGREGATOR wrong length -> attribute-discard', () => {
    const u = decodeUpdate(withAttrs([attr(0xc0, 18, [0, 1, 0, 0, 1, 1, 1])], [ORIGIN_IGP, attr(0x40, 2, []), NEXT_HOP_10_0_0_1]), { as4: false });
    discard(u, /AS4_AGGREGATOR/);
  });

  test('treat-as-withdraw outranks attribute-discard when both occur', () => {
    const u = decodeUpdate(withAttrs([attr(0x40, 6, [1]), attr(0xc0, 8, [0, 0, 1])]));
    withdraw(u, /COMMUNITIES/);
    assert.ok(u.errors!.some((e) => /ATOMIC_AGGREGATE/.test(e)));
  });
  test('a session-reset error after a treat-as-withdraw one still resets', () =>
    void assertBgpError(() => decodeMessage(withAttrs([attr(0xc0, 8, [0, 0, 1]), attr(0x40, 99, [])]), AS4), 3, 2));

  // --- unknown attributes ---
  test('unknown optional transitive: kept, and re-encoded with the partial bit', () => {
    const u = decodeUpdate(withAttrs([attr(0xc0, 99, [7, 8])]));
    assert.equal(u.handling, undefined);
    assert.deepStrictEqual(u.attributes.unknown, [{ flags: 0xc0, code: 99, value: Uint8Array.of(7, 8) }]);
    const re = encodeMessage(u, AS4);
    assert.ok(re.includes(Buffer.from([0xe0, 99, 2, 7, 8])));
  });
  test('unknown optional non-transitive: dropped silently', () => {
    const u = decodeUpdate(withAttrs([attr(0x80, 99, [7, 8])]));
    assert.equal(u.handling, undefined);
    assert.equal(u.attributes.unknown, undefined);
  });
});

describe('RFC 6793 AS4 on 2-octet sessions', () => {
  const AS2: CodecOptions = { as4: false };
  test('encode: AS_TRANS in AS_PATH, real path in AS4_PATH, AS4_AGGREGATOR', () => {
    const u: UpdateMessage = {
      type: 'update',
      withdrawn: [],
      nlri: [],
      attributes: { asPath: [{ type: 'sequence', asns: [65001, 4200000000] }], aggregator: { asn: 4200000001, address: '1.2.3.4' } },
    };
    const b = encodeMessage(u, AS2);
    assert.ok(b.includes(Buffer.from([0x40, 2, 6, 2, 2, ...u16(65001), ...u16(AS_TRANS)])));
    assert.ok(b.includes(Buffer.from([0xc0, 17, 10, 2, 2, ...u32(65001), ...u32(4200000000)])));
    assert.ok(b.includes(Buffer.from([0xc0, 7, 6, ...u16(AS_TRANS), 1, 2, 3, 4])));
    assert.ok(b.includes(Buffer.from([0xc0, 18, 8, ...u32(4200000001), 1, 2, 3, 4])));
    assert.deepStrictEqual(decodeUpdate(b, AS2).attributes, u.attributes);
  });
  test('decode: AS4_PATH shorter than AS_PATH keeps the leading ASes (4.2.3)', () => {
    const as2 = attr(0x40, 2, [2, 4, ...u16(1), ...u16(2), ...u16(AS_TRANS), ...u16(3)]);
    const as4 = attr(0xc0, 17, [2, 2, ...u32(70000), ...u32(3)]);
    const u = decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP, as2, NEXT_HOP_10_0_0_1, as4], nlri: NLRI_10_1_0_0_16 }), AS2);
    assert.equal(u.handling, undefined);
    assert.deepStrictEqual(u.attributes.asPath, [
      { type: 'sequence', asns: [1, 2] },
      { type: 'sequence', asns: [70000, 3] },
    ]);
  });
  test('decode: AS4_PATH longer than AS_PATH is ignored', () => {
    const as2 = attr(0x40, 2, [2, 1, ...u16(AS_TRANS)]);
    const as4 = attr(0xc0, 17, [2, 2, ...u32(70000), ...u32(3)]);
    const u = decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP, as2, NEXT_HOP_10_0_0_1, as4], nlri: NLRI_10_1_0_0_16 }), AS2);
    assert.deepStrictEqual(u.attributes.asPath, [{ type: 'sequence', asns: [AS_TRANS] }]);
  });
  test('decode: AGGREGATOR not AS_TRANS -> AS4_AGGREGATOR and AS4_PATH ignored', () => {
    const as2 = attr(0x40, 2, [2, 1, ...u16(AS_TRANS)]);
    const as4 = attr(0xc0, 17, [2, 1, ...u32(70000)]);
    const agg = attr(0xc0, 7, [...u16(100), 1, 1, 1, 1]);
    const agg4 = attr(0xc0, 18, [...u32(80000), 2, 2, 2, 2]);
    const u = decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP, as2, NEXT_HOP_10_0_0_1, agg, as4, agg4], nlri: NLRI_10_1_0_0_16 }), AS2);
    assert.deepStrictEqual(u.attributes.asPath, [{ type: 'sequence', asns: [AS_TRANS] }]);
    assert.deepStrictEqual(u.attributes.aggregator, { asn: 100, address: '1.1.1.1' });
  });
  test('decode: AS4_PATH on a 4-octet session is ignored silently', () => {
    const u = decodeUpdate(withAttrsAs4([attr(0xc0, 17, [2, 1, ...u32(70000)])]));
    assert.equal(u.handling, undefined);
    assert.deepStrictEqual(u.attributes.asPath, [{ type: 'sequence', asns: [65001] }]);
  });
  function withAttrsAs4(extra: Buffer[]): Buffer {
    return rawUpdate({ attrs: [...MANDATORY, ...extra], nlri: NLRI_10_1_0_0_16 });
  }
});

describe('packUpdates and End-of-RIB', () => {
  const attrs: PathAttributes = { origin: 0, asPath: [{ type: 'sequence', asns: [65001] }], communities: [0xfde90001] };
  const v4 = (n: number, base = 0): Nlri[] =>
    Array.from({ length: n }, (_, i) => ({ prefix: `10.${((i + base) >> 16) & 255}.${((i + base) >> 8) & 255}.${(i + base) & 255}/32` }));
  const v6 = (n: number): Nlri[] => Array.from({ length: n }, (_, i) => ({ prefix: `fd00::${(i + 1).toString(16)}/128` }));

  function decodeAll(msgs: Buffer[], opts: CodecOptions): { nlri: string[]; withdrawn: string[]; updates: UpdateMessage[] } {
    const nlri: string[] = [];
    const withdrawn: string[] = [];
    const updates: UpdateMessage[] = [];
    for (const m of msgs) {
      assert.ok(m.length <= 4096);
      const u = decodeUpdate(m, opts);
      assert.equal(u.handling, undefined, JSON.stringify(u.errors));
      updates.push(u);
      nlri.push(...u.nlri.map((n) => n.prefix), ...(u.mpReach?.nlri ?? []).map((n) => n.prefix));
      withdrawn.push(...u.withdrawn.map((n) => n.prefix), ...(u.mpUnreach?.withdrawn ?? []).map((n) => n.prefix));
    }
    return { nlri, withdrawn, updates };
  }

  test('10,000 IPv4 /32s pack ~800 per UPDATE and all decode back', () => {
    const nlri = v4(10000);
    const msgs = packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri, withdrawn: [], nextHop: '192.0.2.1' }, AS4);
    const d = decodeAll(msgs, AS4);
    const per = d.updates[0].nlri.length;
    console.log(`packUpdates: 10000 IPv4 /32 -> ${msgs.length} UPDATEs, ${per} per full UPDATE of ${msgs[0].length} bytes`);
    assert.ok(per > 790 && per < 820, String(per));
    assert.ok(msgs[0].length > 4090);
    assert.equal(msgs.length, Math.ceil(10000 / per));
    assert.deepStrictEqual(d.nlri, nlri.map((n) => n.prefix));
    for (const u of d.updates) assert.deepStrictEqual(u.attributes, { ...attrs, nextHop: '192.0.2.1' });
  });

  test('IPv4 withdrawals and ADD-PATH', () => {
    const opts: CodecOptions = { as4: true, addPath: new Set<AfiSafi>(['ipv4-unicast']) };
    const nlri = v4(3000).map((n, i) => ({ ...n, pathId: i + 1 }));
    const withdrawn = v4(3000, 5000).map((n) => ({ ...n, pathId: 7 }));
    const msgs = packUpdates({ afiSafi: 'ipv4-unicast', attributes: { ...attrs, nextHop: '192.0.2.1' }, nlri, withdrawn }, opts);
    const d = decodeAll(msgs, opts);
    assert.equal(d.nlri.length, 3000);
    assert.equal(d.withdrawn.length, 3000);
    assert.deepStrictEqual(d.updates.flatMap((u) => u.nlri), nlri);
    assert.deepStrictEqual(d.updates.flatMap((u) => u.withdrawn), withdrawn);
  });

  test('IPv6 via MP_REACH (global + link-local next hop) and MP_UNREACH', () => {
    const nlri = v6(2000);
    const withdrawn = v6(500).map((n) => ({ prefix: n.prefix.replace('fd00', 'fd01') }));
    const msgs = packUpdates(
      { afiSafi: 'ipv6-unicast', attributes: { ...attrs, nextHop: '10.0.0.1' }, nlri, withdrawn, nextHop: '2001:db8::1', linkLocalNextHop: 'fe80::1' },
      AS4,
    );
    const d = decodeAll(msgs, AS4);
    assert.deepStrictEqual(d.nlri, nlri.map((n) => n.prefix));
    assert.deepStrictEqual(d.withdrawn, withdrawn.map((n) => n.prefix));
    for (const u of d.updates) {
      if (u.mpReach) {
        assert.equal(u.mpReach.nextHop, '2001:db8::1');
        assert.equal(u.mpReach.linkLocalNextHop, 'fe80::1');
        assert.deepStrictEqual(u.attributes, attrs); // IPv4 NEXT_HOP not sent with IPv6
        assert.equal(u.nlri.length, 0);
      }
    }
  });

  test('property: any prefixes pack into valid UPDATEs that decode back in order', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<AfiSafi>('ipv4-unicast', 'ipv6-unicast'),
        fc.boolean(),
        fc.boolean(),
        fc.nat(1200),
        fc.nat(600),
        (afiSafi, addPath, as4, nn, nw) => {
          const opts: CodecOptions = { as4, addPath: addPath ? new Set([afiSafi]) : new Set() };
          const mk = (n: number, salt: number): Nlri[] =>
            Array.from({ length: n }, (_, i) => {
              const prefix = afiSafi === 'ipv4-unicast' ? `${salt}.${(i >> 8) & 255}.${i & 255}.0/24` : `2001:db8:${salt}:${(i + 1).toString(16)}::/64`;
              return addPath ? { prefix, pathId: i } : { prefix };
            });
          const nlri = mk(nn, 10);
          const withdrawn = mk(nw, 11);
          const msgs = packUpdates({ afiSafi, attributes: attrs, nlri, withdrawn, nextHop: afiSafi === 'ipv4-unicast' ? '192.0.2.1' : '2001:db8::1' }, opts);
          const d = decodeAll(msgs, opts);
          assert.deepStrictEqual(d.nlri, nlri.map((n) => n.prefix));
          assert.deepStrictEqual(d.withdrawn, withdrawn.map((n) => n.prefix));
        },
      ),
      { numRuns: 60 },
    );
  });

  test('nothing to send -> no UPDATEs; bad input -> BgpEncodeError', () => {
    assert.deepStrictEqual(packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri: [], withdrawn: [] }, AS4), []);
    assert.throws(() => packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri: [{ prefix: '10.0.0.1/8' }], withdrawn: [], nextHop: '1.1.1.1' }, AS4), BgpEncodeError);
    assert.throws(() => packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri: [{ prefix: '10.0.0.0/33' }], withdrawn: [], nextHop: '1.1.1.1' }, AS4), BgpEncodeError);
    assert.throws(() => packUpdates({ afiSafi: 'ipv6-unicast', attributes: attrs, nlri: [{ prefix: 'fd00::1/64' }], withdrawn: [], nextHop: '::1' }, AS4), BgpEncodeError);
    assert.throws(() => packUpdates({ afiSafi: 'ipv6-unicast', attributes: attrs, nlri: [{ prefix: 'fd00::/64' }], withdrawn: [] }, AS4), BgpEncodeError);
    assert.throws(() => packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri: [{ prefix: '10.0.0.0/8' }], withdrawn: [] }, AS4), BgpEncodeError);
  });

  test('End-of-RIB for IPv4 and IPv6', () => {
    const e4 = endOfRib('ipv4-unicast', AS4);
    assert.equal(e4.length, 23);
    const e6 = endOfRib('ipv6-unicast', AS4);
    const d4 = decodeUpdate(e4);
    const d6 = decodeUpdate(e6);
    assert.ok(isEndOfRib(d4) && isEndOfRib(d6));
    assert.equal(endOfRibFamily(d4), 'ipv4-unicast');
    assert.equal(endOfRibFamily(d6), 'ipv6-unicast');
    assert.ok(!isEndOfRib(decodeUpdate(rawUpdate({ withdrawn: [8, 10] }))));
    assert.ok(!isEndOfRib(decodeUpdate(rawUpdate({ attrs: [ORIGIN_IGP] }))));
  });

  test('throughput: decode 1,000,000 IPv4 /32 in ~1,250 UPDATEs', () => {
    const nlri: Nlri[] = new Array(1_000_000);
    for (let i = 0; i < nlri.length; i++) nlri[i] = { prefix: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32` };
    let t = performance.now();
    const msgs = packUpdates({ afiSafi: 'ipv4-unicast', attributes: attrs, nlri, withdrawn: [], nextHop: '192.0.2.1' }, AS4);
    const packMs = performance.now() - t;
    t = performance.now();
    let n = 0;
    const framer = new Framer();
    for (const f of framer.push(Buffer.concat(msgs))) n += (decodeMessage(f, AS4) as UpdateMessage).nlri.length;
    const decodeMs = performance.now() - t;
    console.log(`throughput: packed 1,000,000 /32 into ${msgs.length} UPDATEs in ${packMs.toFixed(0)} ms; framed+decoded in ${decodeMs.toFixed(0)} ms`);
    assert.equal(n, 1_000_000);
  });
});

describe('negotiate', () => {
  test('intersection of families, as4, ADD-PATH directions, graceful restart', () => {
    const local: Capabilities = {
      multiprotocol: ['ipv4-unicast', 'ipv6-unicast'],
      as4: 65001,
      routeRefresh: true,
      addPath: [
        { afiSafi: 'ipv4-unicast', send: true, receive: true },
        { afiSafi: 'ipv6-unicast', send: true, receive: false },
      ],
      gracefulRestart: { restartTimeSec: 120, restarting: false, families: [] },
    };
    const remote: Capabilities = {
      multiprotocol: ['ipv4-unicast'],
      as4: 65002,
      addPath: [{ afiSafi: 'ipv4-unicast', send: true, receive: false }],
      gracefulRestart: { restartTimeSec: 90, restarting: true, families: [{ afiSafi: 'ipv4-unicast', forwardingPreserved: true }, { afiSafi: 'ipv6-unicast', forwardingPreserved: true }] },
    };
    const n = negotiate(local, remote);
    assert.equal(n.as4, true);
    assert.deepStrictEqual([...n.families], ['ipv4-unicast']);
    assert.equal(n.routeRefresh, false);
    assert.deepStrictEqual([...n.addPathReceive], ['ipv4-unicast']);
    assert.deepStrictEqual([...n.addPathSend], []);
    assert.deepStrictEqual(n.gracefulRestart, { restartTimeSec: 90, peerRestarting: true, families: [{ afiSafi: 'ipv4-unicast', forwardingPreserved: true }], local: true });
    const o = codecOptions(n, false);
    assert.deepStrictEqual([...(o.decode.addPath ?? [])], ['ipv4-unicast']);
  });
  test('no multiprotocol capability means IPv4 unicast; one side without AS4 means 2-octet', () => {
    const n = negotiate({ multiprotocol: [], as4: 1 }, { multiprotocol: ['ipv4-unicast', 'ipv6-unicast'] });
    assert.deepStrictEqual([...n.families], ['ipv4-unicast']);
    assert.equal(n.as4, false);
    assert.equal(n.gracefulRestart, undefined);
  });
});
