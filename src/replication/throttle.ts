/**
 * Bandwidth limit shared by all copy workers: a reservation on one shared timeline. A caller
 * waits until the bytes reserved before it have "been paid" at `bytesPerSecond`, then reserves
 * its own, so N workers together never exceed the rate by more than one chunk however their
 * requests interleave.
 */
import { sleep } from '../retry';

export class Throttle {
  private paidUntil = 0;

  /** 0 = unlimited. */
  constructor(readonly bytesPerSecond: number) {}

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond <= 0 || bytes <= 0) return;
    const now = Date.now();
    const start = Math.max(this.paidUntil, now);
    this.paidUntil = start + (bytes / this.bytesPerSecond) * 1000;
    if (start > now) await sleep(start - now, signal);
  }
}
