/**
 * A client's replies in request order. Each request takes a slot when it is dispatched; answers
 * fill slots in any order (from the node, or made by the proxy) and leave in one write per client
 * per event-loop turn, in slot order. A client whose unsent bytes pass the output limit is cut off
 * instead of growing the proxy's memory.
 */
import type net from 'node:net';
/** A reply's place in the queue: its sequence number (no object per request). */
export type Slot = number;

export class ReplyQueue {
  /** Replies owed in slot order; undefined = not answered yet. items[head] is slot `first`. */
  private items: (Buffer | undefined)[] = [];
  private head = 0;
  private first = 0;
  private flushScheduled = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly outputLimit: number,
    /** After each flush: the session resumes reading, closes after QUIT, ... */
    private readonly afterFlush: () => void,
    private readonly onOutputLimit: (pendingBytes: number) => void,
  ) {}

  /** Replies owed (requests dispatched and not yet written back). */
  get length(): number {
    return this.items.length - this.head;
  }

  slot(): Slot {
    const s = this.first + this.items.length - this.head;
    this.items.push(undefined);
    return s;
  }

  fill(slot: Slot, data: Buffer): void {
    if (slot < this.first) return; // already written (a slot is filled once)
    this.items[this.head + slot - this.first] = data;
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the poll phase: replies from several node reads leave in one write per client.
    setImmediate(this.scheduledFlush);
  }

  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /** Writes every reply that is ready and not behind an unanswered one. */
  flush(): void {
    if (this.socket.destroyed) return;
    const items = this.items;
    const start = this.head;
    let end = start;
    while (end < items.length && items[end] !== undefined) end++;
    if (end > start) {
      const n = end - start;
      let data: Buffer;
      if (n === 1) {
        data = items[start]!;
        items[start] = undefined;
      } else {
        const out: Buffer[] = new Array(n);
        for (let i = 0; i < n; i++) {
          out[i] = items[start + i]!;
          items[start + i] = undefined;
        }
        data = Buffer.concat(out);
      }
      this.head = end;
      this.first += n;
      // Compact once the consumed prefix dominates, keeping this amortised O(1).
      if (this.head === items.length) {
        items.length = 0;
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > items.length) {
        this.items = items.slice(this.head);
        this.head = 0;
      }
      this.socket.write(data);
    }
    if (this.socket.writableLength > this.outputLimit) {
      this.onOutputLimit(this.socket.writableLength);
      this.socket.destroy();
      return;
    }
    this.afterFlush();
  }
}
