/**
 * DOC: Cursor reader over a Buffer window [pos, end). Every read is bounds-checked and a short
 * read throws `BgpError` with the NOTIFICATION code/subcode the caller chose for this window
 * (so a truncated capability is an OPEN error, a truncated attribute an UPDATE error).
 * Never allocates per byte; `bytes()` returns a view, not a copy.
 */
import { BgpError } from './errors.ts';

export class Reader {
  readonly buf: Buffer;
  pos: number;
  readonly end: number;
  private readonly errCode: number;
  private readonly errSubcode: number;
  private readonly what: string;

  constructor(buf: Buffer, start: number, end: number, errCode: number, errSubcode: number, what: string) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    this.errCode = errCode;
    this.errSubcode = errSubcode;
    this.what = what;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Throw unless n more bytes are available. */
  need(n: number): void {
    if (this.pos + n > this.end) {
      throw new BgpError(
        `${this.what}: need ${n} byte(s) at offset ${this.pos}, only ${this.end - this.pos} left`,
        this.errCode,
        this.errSubcode,
      );
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A view of the next n bytes (not a copy). */
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }

  /** A reader over the next n bytes (with its own error), advancing this one past them. */
  sub(n: number, errCode: number, errSubcode: number, what: string): Reader {
    this.need(n);
    const r = new Reader(this.buf, this.pos, this.pos + n, errCode, errSubcode, what);
    this.pos += n;
    return r;
  }

  ipv4(): string {
    this.need(4);
    const b = this.buf;
    const p = this.pos;
    this.pos += 4;
    return `${b[p]}.${b[p + 1]}.${b[p + 2]}.${b[p + 3]}`;
  }
}
