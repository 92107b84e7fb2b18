/**
 * Address arithmetic for block IPAM: addresses as bigints, CIDRs, a pool's blocks, ordinals within
 * a block and Calico's block naming (`10.65.1.0/26` -> `10.65.1.0-26`). Pure; knows nothing about
 * etcd or the JSON the blocks are stored as.
 */
import ipaddr from 'ipaddr.js';
import { IpamRequestError } from './errors.ts';

export type IpVersion = 4 | 6;

export interface Cidr {
  readonly version: IpVersion;
  /** The network address (host bits zero). */
  readonly base: bigint;
  readonly prefix: number;
}

export function bits(version: IpVersion): number {
  return version === 4 ? 32 : 128;
}

/** Parses a bare address (no mask); undefined when it is not one. */
export function parseAddr(text: string): { version: IpVersion; value: bigint } | undefined {
  const s = text.trim();
  let bytes: number[];
  let version: IpVersion;
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) {
    bytes = ipaddr.IPv4.parse(s).toByteArray();
    version = 4;
  } else if (s.includes(':') && !s.includes('%') && ipaddr.IPv6.isValid(s)) {
    bytes = ipaddr.IPv6.parse(s).toByteArray();
    version = 6;
  } else return undefined;
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { version, value };
}

/** An address's text: dotted quad, or RFC 5952 for IPv6. */
export function formatAddr(version: IpVersion, value: bigint): string {
  const n = version === 4 ? 4 : 16;
  const bytes = new Array<number>(n);
  let v = value;
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return version === 4 ? ipaddr.fromByteArray(bytes).toString() : (ipaddr.fromByteArray(bytes) as ipaddr.IPv6).toRFC5952String();
}

/**
 * Parses `addr/prefix`. With `strict`, host bits must be zero; otherwise they are masked off.
 * A bare address is a full-length prefix.
 */
export function parseCidr(text: string, strict = false): Cidr {
  const [addrText, prefixText, ...rest] = text.trim().split('/');
  const addr = parseAddr(addrText ?? '');
  if (!addr || rest.length > 0) throw new IpamRequestError(`invalid CIDR '${text}': not an IPv4 or IPv6 address`);
  const width = bits(addr.version);
  const prefix = prefixText === undefined ? width : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > width) throw new IpamRequestError(`invalid CIDR '${text}': prefix must be 0-${width}`);
  const base = addr.value & networkMask(addr.version, prefix);
  if (strict && base !== addr.value) throw new IpamRequestError(`invalid CIDR '${text}': host bits set (network is ${formatAddr(addr.version, base)}/${prefix})`);
  return { version: addr.version, base, prefix };
}

export function networkMask(version: IpVersion, prefix: number): bigint {
  const width = BigInt(bits(version));
  const all = (1n << width) - 1n;
  return all ^ ((1n << (width - BigInt(prefix))) - 1n);
}

export function formatCidr(c: Cidr): string {
  return `${formatAddr(c.version, c.base)}/${c.prefix}`;
}

/** How many addresses a CIDR holds. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(bits(c.version) - c.prefix);
}

export function cidrContains(outer: Cidr, inner: Cidr | { version: IpVersion; value: bigint }): boolean {
  if (outer.version !== inner.version) return false;
  const value = 'value' in inner ? inner.value : inner.base;
  if ('prefix' in inner && inner.prefix < outer.prefix) return false;
  return (value & networkMask(outer.version, outer.prefix)) === outer.base;
}

/** Calico's block naming in keys: the CIDR with '/' replaced by '-'. */
export function blockName(cidr: Cidr | string): string {
  return (typeof cidr === 'string' ? cidr : formatCidr(cidr)).replace('/', '-');
}

/** The inverse of blockName: `10.65.1.0-26` -> `10.65.1.0/26`. */
export function blockCidrFromName(name: string): string {
  const i = name.lastIndexOf('-');
  if (i < 0) throw new IpamRequestError(`invalid block name '${name}': expected <address>-<prefix>`);
  return `${name.slice(0, i)}/${name.slice(i + 1)}`;
}

/** The address at `ordinal` in a block. */
export function ordinalToAddr(block: Cidr, ordinal: number): bigint {
  if (!Number.isInteger(ordinal) || ordinal < 0 || BigInt(ordinal) >= cidrSize(block)) {
    throw new IpamRequestError(`ordinal ${ordinal} is outside block ${formatCidr(block)}`);
  }
  return block.base + BigInt(ordinal);
}

/** The ordinal of an address in a block; undefined when it is outside. */
export function addrToOrdinal(block: Cidr, version: IpVersion, value: bigint): number | undefined {
  if (version !== block.version || !cidrContains(block, { version, value })) return undefined;
  return Number(value - block.base);
}

/** The block of `blockSize` that holds an address. */
export function blockOf(version: IpVersion, value: bigint, blockSize: number): Cidr {
  return { version, base: value & networkMask(version, blockSize), prefix: blockSize };
}

/** How many blocks of `blockSize` a pool holds (bigint: IPv6 pools hold astronomically many). */
export function blockCount(pool: Cidr, blockSize: number): bigint {
  return 1n << BigInt(blockSize - pool.prefix);
}

/** The `index`-th block of a pool. */
export function nthBlock(pool: Cidr, blockSize: number, index: bigint): Cidr {
  const step = 1n << BigInt(bits(pool.version) - blockSize);
  return { version: pool.version, base: pool.base + index * step, prefix: blockSize };
}

/**
 * A pool's blocks, starting at `start` and wrapping around, lazily: the caller stops at the first
 * free one, so even a /48 of /122s costs only as many steps as there are blocks in use.
 */
export function* poolBlocks(pool: Cidr, blockSize: number, start = 0n): Generator<Cidr> {
  const n = blockCount(pool, blockSize);
  const first = ((start % n) + n) % n;
  for (let i = 0n; i < n; i++) yield nthBlock(pool, blockSize, (first + i) % n);
}

/**
 * Where a host starts looking for a free block in a pool (Calico seeds its block generator from the
 * hostname too): hosts spread over the pool instead of all fighting for its first block.
 */
export function hostStartIndex(host: string, pool: Cidr, blockSize: number): bigint {
  let h = 0xcbf29ce484222325n; // FNV-1a 64
  for (const ch of Buffer.from(host, 'utf8')) {
    h ^= BigInt(ch);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h % blockCount(pool, blockSize);
}
