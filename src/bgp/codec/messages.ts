/**
 * DOC: Whole BGP messages (RFC 4271 section 4): the 19-byte header and the OPEN, UPDATE,
 * NOTIFICATION (with RFC 9003 shutdown communication), KEEPALIVE and ROUTE-REFRESH (RFC 2918,
 * RFC 7313) bodies. `decodeMessage` takes one whole frame (see framer.ts) and throws BgpError
 * only for errors that reset the session; RFC 7606 outcomes that keep the session are returned
 * on the UpdateMessage as `handling` + `errors`. Never does I/O.
 */
import type {
  BgpMessage,
  CodecOptions,
  NotificationMessage,
  OpenMessage,
  RouteRefreshMessage,
  UpdateMessage,
} from '../types.ts';
import { decodeAttributes, decodeIpv4Field, encodeAttributes, encodeMpReach, encodeMpUnreach } from './attributes.ts';
import { decodeOptionalParameters, encodeOptionalParameters } from './capabilities.ts';
import {
  BgpEncodeError,
  BgpError,
  CeaseSubcode,
  ErrorCode,
  HeaderSubcode,
  OpenSubcode,
  RouteRefreshSubcode,
  UpdateSubcode,
} from './errors.ts';
import { afiOf, afiSafiOf, SAFI_UNICAST } from './families.ts';
import { writeIPv4, writePrefix } from './prefixes.ts';
import { Reader } from './reader.ts';
import { Writer } from './writer.ts';

export const HEADER_LENGTH = 19;
export const MAX_MESSAGE_LENGTH = 4096;
export const TYPE_CODE = { open: 1, update: 2, notification: 3, keepalive: 4, 'route-refresh': 5 } as const;
/** Minimum total length per message type (index = type code). */
const MIN_LENGTH = [0, 29, 23, 21, 19, 23];
const AS_TRANS = 23456;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function u16Bytes(v: number): Uint8Array {
  return Uint8Array.of((v >> 8) & 0xff, v & 0xff);
}

// ---------------------------------------------------------------------------------------------
// Header

/** Start a message: marker, length placeholder, type. Returns the offset of the length field. */
function beginMessage(w: Writer, type: number): number {
  w.fillBytes(0xff, 16);
  const at = w.mark16();
  w.u8(type);
  return at;
}

function endMessage(w: Writer, lenAt: number, opts: CodecOptions, what: string): Buffer {
  const max = opts.maxMessageSize ?? MAX_MESSAGE_LENGTH;
  if (w.pos > max) throw new BgpEncodeError(`${what} of ${w.pos} bytes exceeds the maximum message size ${max}`);
  w.set16(lenAt, w.pos);
  return w.finish();
}

/**
 * Check the header of a whole frame (marker, length, type). Used by the framer (which may not
 * know the type's minimum yet) and by decodeMessage.
 */
export function checkHeader(frame: Buffer, max: number): { length: number; type: number } {
  if (frame.length < HEADER_LENGTH) {
    throw new BgpError(`message of ${frame.length} bytes is shorter than the header`, ErrorCode.HEADER, HeaderSubcode.BAD_LENGTH);
  }
  for (let i = 0; i < 16; i++) {
    if (frame[i] !== 0xff) throw new BgpError('header marker is not all ones', ErrorCode.HEADER, HeaderSubcode.NOT_SYNCHRONIZED);
  }
  const length = frame.readUInt16BE(16);
  const type = frame[18];
  if (length < HEADER_LENGTH || length > max || length !== frame.length) {
    throw new BgpError(`bad message length ${length}`, ErrorCode.HEADER, HeaderSubcode.BAD_LENGTH, u16Bytes(length));
  }
  if (type < 1 || type > 5) {
    throw new BgpError(`bad message type ${type}`, ErrorCode.HEADER, HeaderSubcode.BAD_TYPE, Uint8Array.of(type));
  }
  const min = MIN_LENGTH[type];
  if (length < min || (type === 4 && length !== 19)) {
    throw new BgpError(`bad length ${length} for message type ${type}`, ErrorCode.HEADER, HeaderSubcode.BAD_LENGTH, u16Bytes(length));
  }
  return { length, type };
}

// ---------------------------------------------------------------------------------------------
// Encode

export function encodeMessage(msg: BgpMessage, opts: CodecOptions): Buffer {
  switch (msg.type) {
    case 'open':
      return encodeOpen(msg, opts);
    case 'update':
      return encodeUpdate(msg, opts);
    case 'notification':
      return encodeNotification(msg, opts);
    case 'keepalive': {
      const w = new Writer(HEADER_LENGTH);
      return endMessage(w, beginMessage(w, TYPE_CODE.keepalive), opts, 'KEEPALIVE');
    }
    case 'route-refresh':
      return encodeRouteRefresh(msg, opts);
    default: {
      const never: never = msg;
      throw new BgpEncodeError(`unknown message type ${String((never as { type?: unknown }).type)}`);
    }
  }
}

function encodeOpen(m: OpenMessage, opts: CodecOptions): Buffer {
  const w = new Writer(256);
  const lenAt = beginMessage(w, TYPE_CODE.open);
  if (!Number.isInteger(m.myAs) || m.myAs < 0 || m.myAs > 0xffffffff) throw new BgpEncodeError(`invalid My AS ${m.myAs}`);
  if (!Number.isInteger(m.holdTime) || m.holdTime < 0 || m.holdTime > 0xffff) throw new BgpEncodeError(`invalid hold time ${m.holdTime}`);
  w.u8(m.version);
  w.u16(m.myAs > 0xffff ? AS_TRANS : m.myAs);
  w.u16(m.holdTime);
  writeIPv4(w, m.bgpId, 'BGP identifier');
  const at = w.mark8();
  encodeOptionalParameters(w, m.capabilities);
  w.fill8(at, 'optional parameters length (RFC 9072 extended parameters are not supported)');
  return endMessage(w, lenAt, opts, 'OPEN');
}

function encodeUpdate(m: UpdateMessage, opts: CodecOptions): Buffer {
  const w = new Writer(MAX_MESSAGE_LENGTH);
  const lenAt = beginMessage(w, TYPE_CODE.update);
  const addPath4 = opts.addPath?.has('ipv4-unicast') ?? false;
  const wl = w.mark16();
  for (const n of m.withdrawn) writePrefix(w, n, 1, addPath4);
  w.fill16(wl);
  const tal = w.mark16();
  if (m.mpReach) encodeMpReach(w, m.mpReach, opts);
  if (m.mpUnreach) encodeMpUnreach(w, m.mpUnreach, opts);
  encodeAttributes(w, m.attributes, opts);
  w.fill16(tal);
  for (const n of m.nlri) writePrefix(w, n, 1, addPath4);
  return endMessage(w, lenAt, opts, 'UPDATE');
}

/** RFC 9003: length octet + UTF-8, at most 255 octets, cut on a character boundary. */
export function shutdownCommunication(text: string): Uint8Array {
  let bytes = utf8.encode(text);
  if (bytes.length > 255) {
    let k = 255;
    while (k > 0 && (bytes[k] & 0xc0) === 0x80) k--;
    bytes = bytes.subarray(0, k);
  }
  const out = new Uint8Array(bytes.length + 1);
  out[0] = bytes.length;
  out.set(bytes, 1);
  return out;
}

function isShutdown(code: number, subcode: number): boolean {
  return (
    code === ErrorCode.CEASE &&
    (subcode === CeaseSubcode.ADMINISTRATIVE_SHUTDOWN || subcode === CeaseSubcode.ADMINISTRATIVE_RESET)
  );
}

function encodeNotification(m: NotificationMessage, opts: CodecOptions): Buffer {
  const w = new Writer(64);
  const lenAt = beginMessage(w, TYPE_CODE.notification);
  w.u8(m.code).u8(m.subcode);
  // `data` is authoritative when non-empty (a decoded NOTIFICATION re-encodes byte for byte);
  // otherwise Cease/2 and Cease/4 carry `shutdownText` as an RFC 9003 shutdown communication.
  if (m.data.length === 0 && m.shutdownText !== undefined && isShutdown(m.code, m.subcode)) {
    w.bytes(shutdownCommunication(m.shutdownText));
  } else {
    w.bytes(m.data);
  }
  return endMessage(w, lenAt, opts, 'NOTIFICATION');
}

function encodeRouteRefresh(m: RouteRefreshMessage, opts: CodecOptions): Buffer {
  const w = new Writer(32);
  const lenAt = beginMessage(w, TYPE_CODE['route-refresh']);
  const fam = m.unsupportedFamily;
  w.u16(fam ? fam.afi : afiOf(m.afiSafi)).u8(m.subtype).u8(fam ? fam.safi : SAFI_UNICAST);
  return endMessage(w, lenAt, opts, 'ROUTE-REFRESH');
}

// ---------------------------------------------------------------------------------------------
// Decode

export function decodeMessage(frame: Buffer, opts: CodecOptions): BgpMessage {
  const { length, type } = checkHeader(frame, opts.maxMessageSize ?? MAX_MESSAGE_LENGTH);
  switch (type) {
    case 1:
      return decodeOpen(frame, length);
    case 2:
      return decodeUpdate(frame, length, opts);
    case 3:
      return decodeNotification(frame, length);
    case 4:
      return { type: 'keepalive' };
    default:
      return decodeRouteRefresh(frame, length);
  }
}

function decodeOpen(frame: Buffer, length: number): OpenMessage {
  const r = new Reader(frame, HEADER_LENGTH, length, ErrorCode.OPEN, OpenSubcode.UNSPECIFIC, 'OPEN');
  const version = r.u8();
  if (version !== 4) {
    throw new BgpError(`unsupported BGP version ${version}`, ErrorCode.OPEN, OpenSubcode.UNSUPPORTED_VERSION, u16Bytes(4));
  }
  const myAs = r.u16();
  const holdTime = r.u16();
  if (holdTime === 1 || holdTime === 2) {
    throw new BgpError(`unacceptable hold time ${holdTime}`, ErrorCode.OPEN, OpenSubcode.UNACCEPTABLE_HOLD_TIME);
  }
  if (frame.readUInt32BE(r.pos) === 0) {
    throw new BgpError('BGP identifier 0.0.0.0', ErrorCode.OPEN, OpenSubcode.BAD_BGP_ID);
  }
  const bgpId = r.ipv4();
  const optLen = r.u8();
  if (optLen !== r.remaining) {
    throw new BgpError(
      `optional parameters length ${optLen} != ${r.remaining} remaining`,
      ErrorCode.OPEN,
      OpenSubcode.UNSPECIFIC,
    );
  }
  const capabilities = decodeOptionalParameters(r);
  return { type: 'open', version, myAs, holdTime, bgpId, capabilities };
}

function decodeUpdate(frame: Buffer, length: number, opts: CodecOptions): UpdateMessage {
  let p = HEADER_LENGTH;
  const wl = frame.readUInt16BE(p);
  p += 2;
  if (p + wl + 2 > length) {
    throw new BgpError(`withdrawn routes length ${wl} overruns the message`, ErrorCode.UPDATE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST);
  }
  const withdrawn = decodeIpv4Field(frame, p, p + wl, opts);
  p += wl;
  const tal = frame.readUInt16BE(p);
  p += 2;
  if (p + tal > length) {
    throw new BgpError(`total path attribute length ${tal} overruns the message`, ErrorCode.UPDATE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST);
  }
  const decoded = decodeAttributes(frame, p, p + tal, opts);
  p += tal;
  const nlri = decodeIpv4Field(frame, p, length, opts);
  const a = decoded.attributes;
  let level = decoded.level;
  const errors = decoded.errors;
  // RFC 7606 section 3(d): a missing well-known mandatory attribute -> treat-as-withdraw.
  if (nlri.length > 0 || decoded.mpReach) {
    const missing: string[] = [];
    if (a.origin === undefined) missing.push('ORIGIN');
    if (a.asPath === undefined) missing.push('AS_PATH');
    if (nlri.length > 0 && a.nextHop === undefined) missing.push('NEXT_HOP');
    if (missing.length > 0) {
      errors.push(`missing well-known attribute(s) ${missing.join(', ')}`);
      level = 2;
    }
  }
  return {
    type: 'update',
    withdrawn,
    attributes: a,
    nlri,
    ...(decoded.mpReach ? { mpReach: decoded.mpReach } : {}),
    ...(decoded.mpUnreach ? { mpUnreach: decoded.mpUnreach } : {}),
    ...(level > 0 ? { handling: level === 2 ? ('treat-as-withdraw' as const) : ('attribute-discard' as const), errors } : {}),
  };
}

function decodeNotification(frame: Buffer, length: number): NotificationMessage {
  const code = frame[HEADER_LENGTH];
  const subcode = frame[HEADER_LENGTH + 1];
  const data = Uint8Array.from(frame.subarray(HEADER_LENGTH + 2, length));
  if (isShutdown(code, subcode) && data.length > 1 && data[0] > 0 && data[0] <= data.length - 1) {
    try {
      const shutdownText = utf8Strict.decode(data.subarray(1, 1 + data[0]));
      return { type: 'notification', code, subcode, data, shutdownText };
    } catch {
      // not UTF-8: keep the raw data only
    }
  }
  return { type: 'notification', code, subcode, data };
}

function decodeRouteRefresh(frame: Buffer, length: number): RouteRefreshMessage {
  if (length !== 23) {
    throw new BgpError(`ROUTE-REFRESH length ${length} != 23`, ErrorCode.ROUTE_REFRESH, RouteRefreshSubcode.INVALID_LENGTH, Uint8Array.from(frame));
  }
  const afi = frame.readUInt16BE(HEADER_LENGTH);
  const subtype = frame[HEADER_LENGTH + 2];
  const safi = frame[HEADER_LENGTH + 3];
  const f = afiSafiOf(afi, safi);
  if (f === undefined) return { type: 'route-refresh', afiSafi: 'ipv4-unicast', subtype, unsupportedFamily: { afi, safi } };
  return { type: 'route-refresh', afiSafi: f, subtype };
}
