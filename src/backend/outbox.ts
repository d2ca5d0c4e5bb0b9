/**
 * Bytes to write, collected as ranges of other buffers and copied once into one Buffer when the
 * batch is taken. Adjacent ranges of one buffer merge: a client's pipelined requests lie back to
 * back in its read buffer, and the node answers them back to back in its own, so a batch is
 * usually a few large copies, or none (a batch of one range is written as a view of it).
 *
 * Why not a Buffer view per request or reply: on the data path a view costs more than the rest of
 * a request's handling (a typed array object and a runtime call for its ArrayBuffer).
 */
export class Outbox {
  private readonly bufs: (Buffer | undefined)[] = [];
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private count = 0;
  private bytes = 0;

  /** Bytes waiting. */
  get length(): number {
    return this.bytes;
  }

  /** Adds `buf[start, end)`; `buf` must not change until the batch is taken. */
  add(buf: Buffer, start: number, end: number): void {
    const n = this.count;
    if (n > 0 && this.ends[n - 1] === start && this.bufs[n - 1] === buf) {
      this.ends[n - 1] = end;
    } else {
      this.bufs[n] = buf;
      this.starts[n] = start;
      this.ends[n] = end;
      this.count = n + 1;
    }
    this.bytes += end - start;
  }

  /** The waiting bytes as one Buffer, undefined when there are none; the outbox is emptied. */
  take(): Buffer | undefined {
    const n = this.count;
    if (n === 0) return undefined;
    let data: Buffer;
    if (n === 1) {
      const buf = this.bufs[0]!;
      data = this.starts[0] === 0 && this.ends[0] === buf.length ? buf : buf.subarray(this.starts[0], this.ends[0]);
    } else {
      data = Buffer.allocUnsafe(this.bytes);
      let pos = 0;
      for (let i = 0; i < n; i++) pos = copyRange(this.bufs[i]!, this.starts[i], this.ends[i], data, pos);
    }
    this.clear();
    return data;
  }

  clear(): void {
    for (let i = 0; i < this.count; i++) this.bufs[i] = undefined;
    this.count = 0;
    this.bytes = 0;
  }
}

/** Copies `src[start, end)` to `dst` at `pos`; returns the end position in `dst`. */
function copyRange(src: Buffer, start: number, end: number, dst: Buffer, pos: number): number {
  const len = end - start;
  if (len <= 64) {
    // Short ranges: a loop is cheaper than the view TypedArray#set needs.
    for (let i = 0; i < len; i++) dst[pos + i] = src[start + i];
  } else {
    dst.set(new Uint8Array(src.buffer, src.byteOffset + start, len), pos);
  }
  return pos + len;
}
