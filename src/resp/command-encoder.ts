/**
 * Encodes RESP commands (arrays of bulk strings) straight into large blocks, for the paths that
 * produce many commands in a row (snapshot key reads, snapshot files): no intermediate Buffer per
 * argument and per command as `encodeArgs` makes, and one write per batch. Values larger than
 * BIG_VALUE are not copied: they become chunks of their own.
 */
const BLOCK = 256 * 1024;
const BIG_VALUE = 16 * 1024;
const CRLF = Buffer.from('\r\n');

export class CommandEncoder {
  private block: Buffer = Buffer.allocUnsafe(BLOCK);
  private start = 0;
  private pos = 0;
  private chunks: Buffer[] = [];
  private chunkBytes = 0;

  /** Bytes encoded and not yet taken. */
  get length(): number {
    return this.chunkBytes + this.pos - this.start;
  }

  command(args: ReadonlyArray<Buffer | string>): void {
    this.arrayHeader(args.length);
    for (const a of args) this.bulk(a);
  }

  /** `*<count>\r\n`: the caller then adds `count` bulks. */
  arrayHeader(count: number): void {
    this.ensure(24);
    this.block[this.pos++] = 42;
    this.digits(count);
  }

  bulk(value: Buffer | string): void {
    if (typeof value === 'string') {
      const len = Buffer.byteLength(value);
      this.ensure(len + 26);
      this.block[this.pos++] = 36;
      this.digits(len);
      this.pos += this.block.write(value, this.pos);
      this.block[this.pos++] = 13;
      this.block[this.pos++] = 10;
      return;
    }
    const len = value.length;
    if (len >= BIG_VALUE) {
      this.ensure(24);
      this.block[this.pos++] = 36;
      this.digits(len);
      this.seal();
      this.chunks.push(value, CRLF);
      this.chunkBytes += len + 2;
      return;
    }
    this.ensure(len + 26);
    this.block[this.pos++] = 36;
    this.digits(len);
    value.copy(this.block, this.pos);
    this.pos += len;
    this.block[this.pos++] = 13;
    this.block[this.pos++] = 10;
  }

  /** A bulk holding the decimal form of an integer. */
  bulkInteger(n: number): void {
    this.bulk(String(n));
  }

  /** Everything encoded so far as chunks (in order), and resets. */
  takeChunks(): Buffer[] {
    this.seal();
    const out = this.chunks;
    this.chunks = [];
    this.chunkBytes = 0;
    return out;
  }

  /** Everything encoded so far as one buffer, and resets. */
  take(): Buffer {
    const chunks = this.takeChunks();
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  }

  /** `<n>\r\n` (non-negative integers of headers and lengths). */
  private digits(n: number): void {
    if (n < 10) {
      this.block[this.pos++] = 48 + n;
    } else {
      this.pos += this.block.write(String(n), this.pos, 'latin1');
    }
    this.block[this.pos++] = 13;
    this.block[this.pos++] = 10;
  }

  private seal(): void {
    if (this.pos > this.start) {
      this.chunks.push(this.block.subarray(this.start, this.pos));
      this.chunkBytes += this.pos - this.start;
      this.start = this.pos;
    }
  }

  /** Room for `bytes` more in the current block (a new block when needed; sealed parts stay valid). */
  private ensure(bytes: number): void {
    if (this.pos + bytes <= this.block.length) return;
    this.seal();
    this.block = Buffer.allocUnsafe(Math.max(BLOCK, bytes));
    this.start = 0;
    this.pos = 0;
  }
}
