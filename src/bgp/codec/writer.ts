/**
 * DOC: Growable big-endian writer. Lengths are reserved with `mark8()`/`mark16()` and back-filled
 * with `fill8()`/`fill16()` once the enclosed bytes are written, so no offsets are counted by hand.
 * `finish()` returns a copy of exactly the written bytes.
 */
import { BgpEncodeError } from './errors.ts';

export class Writer {
  private buf: Buffer;
  pos = 0;

  constructor(initial = 4096) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16BE(v & 0xffff, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** The first n bytes of src (a small copy loop: no subarray allocation). */
  bytesFrom(src: Uint8Array, n: number): this {
    this.ensure(n);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = src[i];
    this.pos = p;
    return this;
  }

  fillBytes(value: number, n: number): this {
    this.ensure(n);
    this.buf.fill(value, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }

  /** Reserve one length byte; returns its offset for `fill8`. */
  mark8(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Reserve two length bytes; returns their offset for `fill16`. */
  mark16(): number {
    this.ensure(2);
    const at = this.pos;
    this.pos += 2;
    return at;
  }

  /** Write the number of bytes written after the 1-byte length at `at`. */
  fill8(at: number, what = 'length'): void {
    const n = this.pos - at - 1;
    if (n > 0xff) throw new BgpEncodeError(`${what} ${n} does not fit in one octet`);
    this.buf[at] = n;
  }

  /** Write the number of bytes written after the 2-byte length at `at`. */
  fill16(at: number, what = 'length'): void {
    const n = this.pos - at - 2;
    if (n > 0xffff) throw new BgpEncodeError(`${what} ${n} does not fit in two octets`);
    this.buf.writeUInt16BE(n, at);
  }

  /** Overwrite a 16-bit value already written (e.g. the message length, which includes the header). */
  set16(at: number, v: number): void {
    this.buf.writeUInt16BE(v, at);
  }

  /** Overwrite one byte already written. */
  set8(at: number, v: number): void {
    this.buf[at] = v;
  }

  /** Remove the byte at `at`, moving everything written after it one byte left. */
  collapse(at: number): void {
    this.buf.copy(this.buf, at, at + 1, this.pos);
    this.pos--;
  }

  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}
