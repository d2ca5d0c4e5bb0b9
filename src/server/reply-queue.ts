/**
 * A client's replies in request order. Each request takes a slot when it is dispatched; answers
 * fill slots in any order (from the node, or made by the proxy) and leave in one write per client
 * per event-loop turn, in slot order. A client whose unsent bytes pass the output limit is cut off
 * instead of growing the proxy's memory.
 */
import type net from 'node:net';
import { Fifo } from '../backend/fifo';

export interface Slot {
  data?: Buffer;
  ready: boolean;
}

export class ReplyQueue {
  private readonly slots = new Fifo<Slot>();
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
    return this.slots.length;
  }

  slot(): Slot {
    const s: Slot = { ready: false };
    this.slots.push(s);
    return s;
  }

  fill(slot: Slot, data: Buffer): void {
    slot.data = data;
    slot.ready = true;
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the poll phase: replies from several node reads leave in one write per client.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Writes every reply that is ready and not behind an unanswered one. */
  flush(): void {
    if (this.socket.destroyed) return;
    const out: Buffer[] = [];
    while (this.slots.peek()?.ready) out.push(this.slots.shift()!.data!);
    if (out.length > 0) this.socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
    if (this.socket.writableLength > this.outputLimit) {
      this.onOutputLimit(this.socket.writableLength);
      this.socket.destroy();
      return;
    }
    this.afterFlush();
  }
}
