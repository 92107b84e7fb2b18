/**
 * DOC: Splits a TCP byte stream into whole BGP messages. Validates only what framing needs:
 * the 16-octet all-ones marker (Header error 1, as soon as 16 bytes are in) and the length
 * (19..max, Header error 2). Returned Buffers are views of the pushed chunks or of a private
 * copy; they are never written to afterwards. After a throw the framer is unusable (the
 * session resets). Decoding is decodeMessage's job.
 */
import { BgpError, ErrorCode, HeaderSubcode } from './errors.ts';

const HEADER = 19;

export class Framer {
  private pending: Buffer | undefined;
  private readonly max: number;

  constructor(maxMessageSize = 4096) {
    this.max = maxMessageSize;
  }

  /** Bytes held back waiting for the rest of a message. */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }

  push(chunk: Buffer): Buffer[] {
    const buf = this.pending && this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    const out: Buffer[] = [];
    let p = 0;
    const n = buf.length;
    while (n - p >= 16) {
      for (let i = 0; i < 16; i++) {
        if (buf[p + i] !== 0xff) {
          throw new BgpError('header marker is not all ones', ErrorCode.HEADER, HeaderSubcode.NOT_SYNCHRONIZED);
        }
      }
      if (n - p < HEADER) break;
      const len = buf.readUInt16BE(p + 16);
      if (len < HEADER || len > this.max) {
        throw new BgpError(
          `bad message length ${len}`,
          ErrorCode.HEADER,
          HeaderSubcode.BAD_LENGTH,
          Uint8Array.of(len >> 8, len & 0xff),
        );
      }
      if (n - p < len) break;
      out.push(buf.subarray(p, p + len));
      p += len;
    }
    if (p < n) this.pending = Buffer.from(buf.subarray(p));
    return out;
  }
}
