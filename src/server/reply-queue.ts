/**
 * A client's replies in request order. Each request takes a slot when it is dispatched; answers
 * fill slots in any order (from the node, or made by the proxy). A reply whose slot is next in
 * order goes straight to the client's outbox (as a byte range of the node's read buffer: no copy,
 * no view); one that arrives early waits for the earlier ones. Outboxes leave in one write per
 * client per event-loop turn. A client whose unsent bytes pass the output limit is cut off
 * instead of growing the proxy's memory.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { SlotTimes, UNTIMED } from '../metrics/command-timing';
import { Outbox } from '../backend/outbox';
import { TurnWriter, writeRepliesAtTurnEnd } from '../turn-end';

/** A reply's place in the queue: its sequence number (no object per request). */
export type Slot = number;

export class ReplyQueue implements TurnWriter {
  /** Slots handed out so far. */
  private slots = 0;
  /** The first slot whose reply is not in the outbox yet. */
  private next = 0;
  /** Replies whose slot is not next yet, by slot. */
  private readonly early = new Map<Slot, Buffer>();
  /** Replies in slot order from `written` to `next`, not yet written. */
  private readonly outbox = new Outbox();
  private written = 0;
  private flushScheduled = false;
  /** Slots whose reply is dropped when it comes (CLIENT REPLY OFF/SKIP). */
  private readonly silent = new Set<Slot>();

  constructor(
    private readonly socket: net.Socket,
    private readonly outputLimit: number,
    /** After each flush: the session resumes reading, closes after QUIT, ... */
    private readonly afterFlush: () => void,
    private readonly onOutputLimit: (pendingBytes: number) => void,
    /** Per-command timing for the metrics (null when --metrics-port is off: nothing is measured). */
    private readonly times: SlotTimes | null = null,
  ) {}

  /** Replies owed (requests dispatched and not yet written back). */
  get length(): number {
    return this.slots - this.written;
  }

  /** A new slot; `code` (a command class, or UNTIMED) and `startMs` are for the command timing. */
  slot(code = UNTIMED, startMs = 0): Slot {
    const slot = this.slots++;
    if (this.times !== null) this.times.taken(slot, this.written, code, startMs);
    return slot;
  }

  /** The reply of `slot` is taken in order but not written (CLIENT REPLY OFF/SKIP). */
  silence(slot: Slot): void {
    this.silent.add(slot);
  }

  fill(slot: Slot, data: Buffer): void {
    this.fillRange(slot, data, 0, data.length);
  }

  /** Fills `slot` with `buf[start, end)`; `buf` must not change until the reply is written. */
  fillRange(slot: Slot, buf: Buffer, start: number, end: number): void {
    if (slot < this.next) return; // already answered (a slot is filled once)
    if (this.silent.size > 0 && this.silent.delete(slot)) end = start;
    if (this.times !== null && buf[start] === 45) this.times.failed(slot);
    if (slot !== this.next) {
      this.early.set(slot, buf.subarray(start, end));
      return;
    }
    this.outbox.add(buf, start, end);
    this.next++;
    if (this.early.size > 0) this.takeEarly();
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the poll phase: replies from several node reads leave in one write per client.
    writeRepliesAtTurnEnd(this);
  }

  /** Moves the early replies that are now in order to the outbox. */
  private takeEarly(): void {
    for (let data = this.early.get(this.next); data; data = this.early.get(this.next)) {
      this.early.delete(this.next);
      this.outbox.add(data, 0, data.length);
      this.next++;
    }
  }

  /** The end-of-turn write (TurnWriter). */
  writeTurn(): void {
    this.flushScheduled = false;
    this.flush();
  }

  /** Writes every reply that is ready and not behind an unanswered one. */
  flush(): void {
    if (this.socket.destroyed) return;
    const data = this.outbox.take();
    if (data) {
      if (this.times !== null) this.times.written(this.written, this.next, performance.now());
      this.written = this.next;
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
