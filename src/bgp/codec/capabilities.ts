/**
 * DOC: OPEN optional parameters and capabilities (RFC 5492): multiprotocol (1, RFC 4760),
 * route refresh (2, RFC 2918), graceful restart (64, RFC 4724), 4-octet AS (65, RFC 6793),
 * ADD-PATH (69, RFC 7911), enhanced route refresh (70, RFC 7313). Capabilities we do not
 * understand (and multiprotocol entries for families we do not support) are kept verbatim in
 * `unknown`. Also the `negotiate()` helper that intersects local and remote capabilities.
 * Malformed capabilities are OPEN errors (subcode 0, unspecific); optional parameters other
 * than Capabilities (2) are OPEN error 4.
 */
import type { AfiSafi, Capabilities, CodecOptions } from '../types.ts';
import { BgpEncodeError, BgpError, ErrorCode, OpenSubcode } from './errors.ts';
import { afiOf, afiSafiOf, SAFI_UNICAST } from './families.ts';
import type { Reader } from './reader.ts';
import { Writer } from './writer.ts';

export const CapabilityCode = {
  MULTIPROTOCOL: 1,
  ROUTE_REFRESH: 2,
  GRACEFUL_RESTART: 64,
  AS4: 65,
  ADD_PATH: 69,
  ENHANCED_ROUTE_REFRESH: 70,
} as const;

const PARAM_CAPABILITIES = 2;

function capError(msg: string): BgpError {
  return new BgpError(`OPEN capability: ${msg}`, ErrorCode.OPEN, OpenSubcode.UNSPECIFIC);
}

type MutableCaps = {
  multiprotocol: AfiSafi[];
  as4?: number;
  routeRefresh?: boolean;
  enhancedRouteRefresh?: boolean;
  gracefulRestart?: Capabilities['gracefulRestart'];
  addPath?: Array<{ afiSafi: AfiSafi; send: boolean; receive: boolean }>;
  unknown?: Array<{ code: number; value: Uint8Array }>;
};

/** Decode the optional parameters of an OPEN (the reader spans exactly the parameters). */
export function decodeOptionalParameters(r: Reader): Capabilities {
  const caps: MutableCaps = { multiprotocol: [] };
  while (!r.done) {
    const type = r.u8();
    const len = r.u8();
    const p = r.sub(len, ErrorCode.OPEN, OpenSubcode.UNSPECIFIC, 'OPEN optional parameter');
    if (type !== PARAM_CAPABILITIES) {
      throw new BgpError(
        `OPEN: unsupported optional parameter type ${type}`,
        ErrorCode.OPEN,
        OpenSubcode.UNSUPPORTED_OPTIONAL_PARAM,
      );
    }
    while (!p.done) {
      const code = p.u8();
      const clen = p.u8();
      const c = p.sub(clen, ErrorCode.OPEN, OpenSubcode.UNSPECIFIC, `capability ${code}`);
      decodeCapability(code, c, caps);
    }
  }
  return caps;
}

function keepUnknown(caps: MutableCaps, code: number, c: Reader): void {
  (caps.unknown ??= []).push({ code, value: Uint8Array.from(c.buf.subarray(c.pos, c.end)) });
}

function decodeCapability(code: number, c: Reader, caps: MutableCaps): void {
  switch (code) {
    case CapabilityCode.MULTIPROTOCOL: {
      if (c.remaining !== 4) throw capError(`multiprotocol length ${c.remaining} != 4`);
      const f = afiSafiOf(c.buf.readUInt16BE(c.pos), c.buf[c.pos + 3]);
      if (f === undefined) keepUnknown(caps, code, c);
      else if (!caps.multiprotocol.includes(f)) caps.multiprotocol.push(f);
      return;
    }
    case CapabilityCode.ROUTE_REFRESH:
      if (c.remaining !== 0) throw capError(`route refresh length ${c.remaining} != 0`);
      caps.routeRefresh = true;
      return;
    case CapabilityCode.ENHANCED_ROUTE_REFRESH:
      if (c.remaining !== 0) throw capError(`enhanced route refresh length ${c.remaining} != 0`);
      caps.enhancedRouteRefresh = true;
      return;
    case CapabilityCode.AS4: {
      if (c.remaining !== 4) throw capError(`4-octet AS length ${c.remaining} != 4`);
      const asn = c.u32();
      if (caps.as4 === undefined) caps.as4 = asn;
      return;
    }
    case CapabilityCode.GRACEFUL_RESTART: {
      if (c.remaining < 2 || (c.remaining - 2) % 4 !== 0) throw capError(`graceful restart length ${c.remaining}`);
      const head = c.u16();
      const families: Array<{ afiSafi: AfiSafi; forwardingPreserved: boolean }> = [];
      while (!c.done) {
        const afi = c.u16();
        const safi = c.u8();
        const flags = c.u8();
        const f = afiSafiOf(afi, safi);
        if (f !== undefined && !families.some((x) => x.afiSafi === f)) {
          families.push({ afiSafi: f, forwardingPreserved: (flags & 0x80) !== 0 });
        }
      }
      if (caps.gracefulRestart === undefined) {
        caps.gracefulRestart = { restartTimeSec: head & 0x0fff, restarting: (head & 0x8000) !== 0, families };
      }
      return;
    }
    case CapabilityCode.ADD_PATH: {
      if (c.remaining % 4 !== 0) throw capError(`ADD-PATH length ${c.remaining} not a multiple of 4`);
      while (!c.done) {
        const afi = c.u16();
        const safi = c.u8();
        const sr = c.u8();
        if (sr < 1 || sr > 3) throw capError(`ADD-PATH send/receive ${sr}`);
        const f = afiSafiOf(afi, safi);
        if (f === undefined) continue;
        const list = (caps.addPath ??= []);
        if (!list.some((x) => x.afiSafi === f)) list.push({ afiSafi: f, receive: (sr & 1) !== 0, send: (sr & 2) !== 0 });
      }
      return;
    }
    default:
      keepUnknown(caps, code, c);
  }
}

/** Encode capabilities as one or more Capabilities optional parameters (each <= 255 bytes). */
export function encodeOptionalParameters(w: Writer, caps: Capabilities): void {
  const items: Uint8Array[] = [];
  const cap = (code: number, body: (cw: Writer) => void): void => {
    const cw = new Writer(64);
    cw.u8(code);
    const at = cw.mark8();
    body(cw);
    cw.fill8(at, `capability ${code} length`);
    items.push(cw.finish());
  };
  for (const f of caps.multiprotocol) {
    cap(CapabilityCode.MULTIPROTOCOL, (cw) => cw.u16(afiOf(f)).u8(0).u8(SAFI_UNICAST));
  }
  if (caps.routeRefresh) cap(CapabilityCode.ROUTE_REFRESH, () => {});
  if (caps.enhancedRouteRefresh) cap(CapabilityCode.ENHANCED_ROUTE_REFRESH, () => {});
  if (caps.as4 !== undefined) {
    if (!Number.isInteger(caps.as4) || caps.as4 < 0 || caps.as4 > 0xffffffff) throw new BgpEncodeError(`invalid AS ${caps.as4}`);
    const as4 = caps.as4;
    cap(CapabilityCode.AS4, (cw) => cw.u32(as4));
  }
  const gr = caps.gracefulRestart;
  if (gr) {
    if (gr.restartTimeSec < 0 || gr.restartTimeSec > 4095) throw new BgpEncodeError(`graceful restart time ${gr.restartTimeSec} > 4095`);
    cap(CapabilityCode.GRACEFUL_RESTART, (cw) => {
      cw.u16((gr.restarting ? 0x8000 : 0) | gr.restartTimeSec);
      for (const f of gr.families) cw.u16(afiOf(f.afiSafi)).u8(SAFI_UNICAST).u8(f.forwardingPreserved ? 0x80 : 0);
    });
  }
  const ap = caps.addPath?.filter((f) => f.send || f.receive);
  if (ap && ap.length > 0) {
    cap(CapabilityCode.ADD_PATH, (cw) => {
      for (const f of ap) cw.u16(afiOf(f.afiSafi)).u8(SAFI_UNICAST).u8((f.receive ? 1 : 0) | (f.send ? 2 : 0));
    });
  }
  for (const u of caps.unknown ?? []) cap(u.code, (cw) => cw.bytes(u.value));

  // Pack capabilities into parameters of at most 255 bytes each.
  let i = 0;
  while (i < items.length) {
    w.u8(PARAM_CAPABILITIES);
    const at = w.mark8();
    let size = 0;
    do {
      size += items[i].length;
      w.bytes(items[i]);
      i++;
    } while (i < items.length && size + items[i].length <= 255);
    w.fill8(at, 'optional parameter length');
  }
}

/** What a session negotiated from the two OPENs. */
export interface Negotiated {
  /** Both sides announced 4-octet AS. */
  readonly as4: boolean;
  /** Families both sides support (no multiprotocol capability means IPv4 unicast only). */
  readonly families: ReadonlySet<AfiSafi>;
  readonly routeRefresh: boolean;
  readonly enhancedRouteRefresh: boolean;
  /** Families for which the peer sends us path ids (decode with these). */
  readonly addPathReceive: ReadonlySet<AfiSafi>;
  /** Families for which we may send path ids (encode with these). */
  readonly addPathSend: ReadonlySet<AfiSafi>;
  /**
   * The peer's graceful restart capability (we can act as helper) when it announced one,
   * restricted to the negotiated families; `local` says whether we announced it too.
   */
  readonly gracefulRestart?: {
    readonly restartTimeSec: number;
    readonly peerRestarting: boolean;
    readonly families: ReadonlyArray<{ readonly afiSafi: AfiSafi; readonly forwardingPreserved: boolean }>;
    readonly local: boolean;
  };
}

function familiesOf(c: Capabilities): Set<AfiSafi> {
  return new Set<AfiSafi>(c.multiprotocol.length > 0 ? c.multiprotocol : ['ipv4-unicast']);
}

export function negotiate(local: Capabilities, remote: Capabilities): Negotiated {
  const lf = familiesOf(local);
  const families = new Set<AfiSafi>([...familiesOf(remote)].filter((f) => lf.has(f)));
  const addPathReceive = new Set<AfiSafi>();
  const addPathSend = new Set<AfiSafi>();
  for (const f of families) {
    const l = local.addPath?.find((x) => x.afiSafi === f);
    const r = remote.addPath?.find((x) => x.afiSafi === f);
    if (l && r) {
      if (l.receive && r.send) addPathReceive.add(f);
      if (l.send && r.receive) addPathSend.add(f);
    }
  }
  const rg = remote.gracefulRestart;
  return {
    as4: local.as4 !== undefined && remote.as4 !== undefined,
    families,
    routeRefresh: !!local.routeRefresh && !!remote.routeRefresh,
    enhancedRouteRefresh: !!local.enhancedRouteRefresh && !!remote.enhancedRouteRefresh,
    addPathReceive,
    addPathSend,
    ...(rg
      ? {
          gracefulRestart: {
            restartTimeSec: rg.restartTimeSec,
            peerRestarting: rg.restarting,
            families: rg.families.filter((f) => families.has(f.afiSafi)),
            local: local.gracefulRestart !== undefined,
          },
        }
      : {}),
  };
}

/** CodecOptions for the two directions of a negotiated session. */
export function codecOptions(n: Negotiated, ibgp: boolean): { decode: CodecOptions; encode: CodecOptions } {
  return {
    decode: { as4: n.as4, addPath: n.addPathReceive, ibgp },
    encode: { as4: n.as4, addPath: n.addPathSend, ibgp },
  };
}
