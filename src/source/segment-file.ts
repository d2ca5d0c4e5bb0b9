/**
 * One open write-log segment file. Appends are synchronous writes (they land in the page cache:
 * cheap, and file order stays offset order without an async queue); fdatasync runs off the event
 * loop (it blocked the loop for milliseconds per call). The fd is never closed while an
 * fdatasync on it is in flight: a closed fd number can be reused by the next open, and the
 * pending sync would then flush (or fail on) another file.
 */
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';

export class SegmentFile {
  private readonly fd: number;
  /** Bytes written since the last fdatasync began. */
  private dirty = false;
  private syncing: Promise<void> | undefined;
  /** A sync requested while one runs: it starts when the running one ends (one queued at most). */
  private queued: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  /** Creates `file` (it must not exist). */
  constructor(readonly file: string) {
    this.fd = openSync(file, 'wx');
  }

  /** Writes `data[start, end)` at the end of the file. */
  write(data: Buffer, start: number, end: number): void {
    if (this.closing) throw new Error(`write log segment ${this.file} is closed`);
    let written = start;
    while (written < end) written += writeSync(this.fd, data, written, end - written);
    if (end > start) this.dirty = true;
  }

  get needsSync(): boolean {
    return this.dirty;
  }

  /** Resolves once everything written before the call is on disk; rejects with the fdatasync error. */
  sync(): Promise<void> {
    if (this.syncing) {
      if (!this.dirty) return this.syncing;
      // Writes made after the running sync began need one more.
      return (this.queued ??= this.syncing.then(
        () => this.startSync(),
        () => this.startSync(),
      ));
    }
    return this.dirty ? this.startSync() : Promise.resolve();
  }

  private startSync(): Promise<void> {
    this.queued = undefined;
    this.dirty = false;
    const p = new Promise<void>((resolve, reject) => {
      fdatasync(this.fd, (err) => {
        if (this.syncing === p) this.syncing = undefined;
        if (err) reject(err);
        else resolve();
      });
    });
    this.syncing = p;
    return p;
  }

  /**
   * Closes the fd after a last fdatasync (`sync`) or, without it, once the syncs in flight have
   * ended. Rejects with the sync's error (the fd is closed all the same).
   */
  close(sync: boolean): Promise<void> {
    if (this.closing) return this.closing;
    const before = sync ? this.sync() : this.settled();
    this.closing = before.then(
      () => closeSync(this.fd),
      (err: unknown) => {
        closeSync(this.fd);
        throw err;
      },
    );
    return this.closing;
  }

  /** Resolves when no sync is running or queued (their errors are someone else's to report). */
  private async settled(): Promise<void> {
    for (let p = this.queued ?? this.syncing; p; p = this.queued ?? this.syncing) await p.catch(() => undefined);
  }
}
