/**
 * DOC: NLRI prefixes and addresses on the wire (RFC 4271 section 4.3, RFC 4760 section 5,
 * RFC 7911 path ids). Converts between the wire form (length octet + minimal address octets)
 * and canonical CIDR strings ("10.0.0.0/8", "2001:db8::/32", RFC 5952 for IPv6).
 * Decoding is a tight loop over the Buffer (no per-prefix Reader, no per-byte allocation).
 * A prefix length beyond 32/128, a truncated prefix or host bits set beyond the length are
 * NLRI that cannot be parsed reliably: RFC 7606 section 5.3 says reset the session.
 */
import ipaddr from 'ipaddr.js';
import type { Afi, Nlri } from '../types.ts';
import { BgpEncodeError, BgpError } from './errors.ts';
import type { Writer } from './writer.ts';

const hextets = new Uint16Array(8);

/** RFC 5952 text of the 16-byte IPv6 address whose first `n` bytes are at buf[off..] (rest zero). */
export function formatIPv6(buf: Uint8Array, off: number, n = 16): string {
  for (let i = 0; i < 8; i++) {
    const hi = 2 * i < n ? buf[off + 2 * i] : 0;
    const lo = 2 * i + 1 < n ? buf[off + 2 * i + 1] : 0;
    hextets[i] = (hi << 8) | lo;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) {
    let s = hextets[0].toString(16);
    for (let i = 1; i < 8; i++) s += ':' + hextets[i].toString(16);
    return s;
  }
  let s = '';
  for (let i = 0; i < bestStart; i++) s += (i ? ':' : '') + hextets[i].toString(16);
  s += '::';
  for (let i = bestStart + bestLen; i < 8; i++) s += (i > bestStart + bestLen ? ':' : '') + hextets[i].toString(16);
  return s;
}

export function formatIPv4(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

// Prefix text is built as character codes and made into ONE flat string. Concatenating the
// pieces instead leaves a chain of cons strings (about 80 bytes more per prefix) behind each key
// of the RIB's maps, and every first hash of such a key copies it.
const codes: number[] = [];
const fromCharCode = String.fromCharCode as (...c: number[]) => string;

function pushDecimal(n: number): void {
  if (n >= 100) codes.push(48 + ((n / 100) | 0), 48 + (((n / 10) | 0) % 10));
  else if (n >= 10) codes.push(48 + ((n / 10) | 0));
  codes.push(48 + (n % 10));
}

/** "a.b.c.d/len" from the first `nb` address bytes at buf[p..] (the rest zero), as a flat string. */
function ipv4PrefixText(buf: Uint8Array, p: number, nb: number, len: number): string {
  codes.length = 0;
  pushDecimal(nb > 0 ? buf[p] : 0);
  codes.push(46);
  pushDecimal(nb > 1 ? buf[p + 1] : 0);
  codes.push(46);
  pushDecimal(nb > 2 ? buf[p + 2] : 0);
  codes.push(46);
  pushDecimal(nb > 3 ? buf[p + 3] : 0);
  codes.push(47);
  pushDecimal(len);
  return fromCharCode.apply(null, codes);
}

/** The same text as one flat string. */
function flatText(s: string): string {
  codes.length = 0;
  for (let i = 0; i < s.length; i++) codes.push(s.charCodeAt(i));
  return fromCharCode.apply(null, codes);
}

/**
 * Decode a run of prefixes filling buf[start, end). Errors throw BgpError(errCode, errSubcode):
 * the caller passes UPDATE/10 for the classic fields and UPDATE/9 inside MP attributes.
 */
export function decodePrefixes(
  buf: Buffer,
  start: number,
  end: number,
  afi: Afi,
  addPath: boolean,
  errCode: number,
  errSubcode: number,
): Nlri[] {
  const out: Nlri[] = [];
  const max = afi === 1 ? 32 : 128;
  let p = start;
  while (p < end) {
    let pathId = 0;
    if (addPath) {
      if (p + 5 > end) throw new BgpError(`NLRI: truncated path id at offset ${p}`, errCode, errSubcode);
      pathId = buf.readUInt32BE(p);
      p += 4;
    }
    const len = buf[p++];
    if (len > max) {
      throw new BgpError(`NLRI: prefix length ${len} > ${max}`, errCode, errSubcode);
    }
    const nb = (len + 7) >> 3;
    if (p + nb > end) {
      throw new BgpError(`NLRI: prefix /${len} needs ${nb} byte(s), ${end - p} left`, errCode, errSubcode);
    }
    if (len & 7 && buf[p + nb - 1] & (0xff >> (len & 7))) {
      throw new BgpError(`NLRI: prefix /${len} has host bits set`, errCode, errSubcode);
    }
    const prefix = afi === 1 ? ipv4PrefixText(buf, p, nb, len) : flatText(formatIPv6(buf, p, nb) + '/' + len);
    p += nb;
    out.push(addPath ? { prefix, pathId } : { prefix });
  }
  return out;
}

const V4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const scratch = new Uint8Array(16);

/** Parse a CIDR of the given family into `scratch`; returns the prefix length. Throws BgpEncodeError. */
function parsePrefix(prefix: string, afi: Afi): number {
  if (afi === 1) {
    const len = parseV4Fast(prefix);
    if (len < 0) {
      // slow path only to produce a precise message
      const m = V4_CIDR.exec(prefix);
      if (!m) throw new BgpEncodeError(`invalid IPv4 prefix '${prefix}'`);
      throw new BgpEncodeError(`invalid IPv4 prefix '${prefix}': octet > 255 or length > 32`);
    }
    checkHostBits(prefix, len, 4);
    return len;
  }
  const slash = prefix.lastIndexOf('/');
  const lenText = slash < 0 ? '' : prefix.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) throw new BgpEncodeError(`invalid IPv6 prefix '${prefix}'`);
  const len = Number(lenText);
  if (len > 128) throw new BgpEncodeError(`invalid IPv6 prefix '${prefix}': length ${len} > 128`);
  const addr = prefix.slice(0, slash);
  if (!ipaddr.IPv6.isValid(addr) || addr.includes('%')) throw new BgpEncodeError(`invalid IPv6 prefix '${prefix}'`);
  scratch.set(ipaddr.IPv6.parse(addr).toByteArray());
  checkHostBits(prefix, len, 16);
  return len;
}

/** "a.b.c.d/len" into scratch[0..3]; returns len, or -1 when not a valid IPv4 CIDR. */
function parseV4Fast(s: string): number {
  const n = s.length;
  let i = 0;
  for (let k = 0; k < 5; k++) {
    let v = 0;
    const start = i;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
    }
    if (i === start || i - start > 3) return -1;
    if (k < 4) {
      if (v > 255 || i >= n || s.charCodeAt(i) !== (k < 3 ? 46 : 47)) return -1;
      scratch[k] = v;
      i++;
    } else {
      return i === n && v <= 32 ? v : -1;
    }
  }
  return -1;
}

function checkHostBits(prefix: string, len: number, size: number): void {
  for (let i = 0; i < size; i++) {
    const bits = len - 8 * i;
    const mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (0xff00 >> bits) & 0xff;
    if (scratch[i] & ~mask & 0xff) throw new BgpEncodeError(`invalid prefix '${prefix}': host bits set beyond /${len}`);
  }
}

/** Append one NLRI (path id when addPath, length octet, minimal address octets). */
export function writePrefix(w: Writer, nlri: Nlri, afi: Afi, addPath: boolean): void {
  const len = parsePrefix(nlri.prefix, afi);
  if (addPath) w.u32(nlri.pathId ?? 0);
  w.u8(len);
  w.bytesFrom(scratch, (len + 7) >> 3);
}

/** Bytes `writePrefix` will write for this NLRI (validates the prefix too). */
export function prefixWireSize(nlri: Nlri, afi: Afi, addPath: boolean): number {
  const len = parsePrefix(nlri.prefix, afi);
  return (addPath ? 5 : 1) + ((len + 7) >> 3);
}

/** IPv4 dotted quad -> 4 bytes in w. */
export function writeIPv4(w: Writer, addr: string, what: string): void {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new BgpEncodeError(`invalid IPv4 address '${addr}' for ${what}`);
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new BgpEncodeError(`invalid IPv4 address '${addr}' for ${what}`);
    w.u8(Number(p));
  }
}

export function writeIPv6(w: Writer, addr: string, what: string): void {
  if (!ipaddr.IPv6.isValid(addr) || addr.includes('%')) throw new BgpEncodeError(`invalid IPv6 address '${addr}' for ${what}`);
  w.bytes(Uint8Array.from(ipaddr.IPv6.parse(addr).toByteArray()));
}
