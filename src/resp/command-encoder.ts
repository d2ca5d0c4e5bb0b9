/**
 * Encodes RESP commands (arrays of bulk strings) straight into large blocks, for the paths that
 * produce many commands in a row (snapshot key reads, snapshot files): no intermediate Buffer per
 * argument and per command as `encodeArgs` makes, and one write per batch. Values larger than
 * BIG_VALUE are not copied: they become chunks of their own.
 */
const BLOCK = 256 * 1024;
const BIG_VALUE = 16 * 1024;
const CRLF = Buffer.from('\r\n');
const SHORT_STRING = 64;

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 127) return false;
  return true;
}

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
      // Short ASCII strings (command names, numbers) are copied by hand: Buffer#write is a
      // native call whose overhead dominates for a few bytes.
      if (value.length <= SHORT_STRING && isAscii(value)) {
        const len = value.length;
        this.ensure(len + 26);
        const block = this.block;
        block[this.pos++] = 36;
        this.digits(len);
        let pos = this.pos;
        for (let i = 0; i < len; i++) block[pos++] = value.charCodeAt(i);
        block[pos++] = 13;
        block[pos++] = 10;
        this.pos = pos;
        return;
      }
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

  /** Bytes already in RESP form (e.g. encoded bulks taken from a reply), copied as they are. */
  raw(bytes: Buffer): void {
    if (bytes.length >= BIG_VALUE) {
      this.seal();
      this.chunks.push(bytes);
      this.chunkBytes += bytes.length;
      return;
    }
    this.ensure(bytes.length);
    bytes.copy(this.block, this.pos);
    this.pos += bytes.length;
  }

  /** A bulk holding the decimal form of an integer. */
  bulkInteger(n: number): void {
    if (!Number.isSafeInteger(n)) {
      this.bulk(String(n));
      return;
    }
    const negative = n < 0;
    let abs = negative ? -n : n;
    let width = 1;
    for (let p = 10; p <= abs; p *= 10) width++;
    const len = width + (negative ? 1 : 0);
    this.ensure(len + 26);
    const block = this.block;
    block[this.pos++] = 36;
    this.digits(len);
    if (negative) block[this.pos++] = 45;
    let end = this.pos + width;
    for (let i = end - 1; i >= this.pos; i--) {
      block[i] = 48 + (abs % 10);
      abs = Math.floor(abs / 10);
    }
    block[end++] = 13;
    block[end++] = 10;
    this.pos = end;
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
    const block = this.block;
    if (n < 10) {
      block[this.pos++] = 48 + n;
    } else {
      let width = 1;
      for (let p = 10; p <= n; p *= 10) width++;
      let rest = n;
      for (let i = this.pos + width - 1; i >= this.pos; i--) {
        block[i] = 48 + (rest % 10);
        rest = Math.floor(rest / 10);
      }
      this.pos += width;
    }
    block[this.pos++] = 13;
    block[this.pos++] = 10;
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
