/**
 * Writes the snapshot writer's blocks to disk in the background, in order: opens a file, writes
 * its blocks with few large writes (writev), fsyncs and closes it, then the next. The writer
 * queues and goes on encoding; `drain()` makes it wait while more than MAX_QUEUED bytes wait for
 * the disk. The first I/O error stops the flusher and is reported by `failure` (IO_ERROR).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';

/** `drain()` waits while more than this waits for the disk. */
const MAX_QUEUED = 4 * 1024 * 1024;

type FlushOp = { kind: 'open'; name: string } | { kind: 'data'; chunks: Buffer[]; bytes: number } | { kind: 'close'; name: string; size: number; records: number };

export class FileFlusher {
  private readonly queue: FlushOp[] = [];
  private queuedBytes = 0;
  private running: Promise<void> | undefined;
  private handle: fsp.FileHandle | undefined;
  private aborted = false;
  private waiters: Array<() => void> = [];
  failure: SyncProxyError | undefined;

  /** `onFileDone` is called once a file is fsynced and closed (it may then be served). */
  constructor(private readonly dir: string, private readonly logger: Logger, private readonly onFileDone: (name: string) => void) {}

  /** Creates `name` in the directory (it must not exist); later writes go to it. */
  open(name: string): void {
    this.enqueue({ kind: 'open', name });
  }

  write(chunks: Buffer[], bytes: number): void {
    this.queuedBytes += bytes;
    this.enqueue({ kind: 'data', chunks, bytes });
  }

  /** fsyncs and closes the open file. */
  close(name: string, size: number, records: number): void {
    this.enqueue({ kind: 'close', name, size, records });
  }

  async drain(): Promise<void> {
    while (!this.failure && this.queuedBytes > MAX_QUEUED) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Resolves once everything queued is on disk (or writing failed: see `failure`). */
  async idle(): Promise<void> {
    while (!this.failure && this.running) await this.running;
  }

  async abort(): Promise<void> {
    this.aborted = true;
    this.failure ??= new SyncProxyError('SNAPSHOT_BUILD_FAILED', 'snapshot build aborted');
    this.queue.length = 0;
    this.wake();
    await this.running?.catch(() => undefined);
    const fh = this.handle;
    this.handle = undefined;
    await fh?.close().catch(() => undefined);
  }

  private enqueue(op: FlushOp): void {
    this.queue.push(op);
    this.kick();
  }

  /** Starts the loop unless it runs (it also restarts for ops queued while it was ending). */
  private kick(): void {
    if (this.running || this.aborted || this.failure) return;
    this.running = this.run().then(() => {
      this.running = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async run(): Promise<void> {
    try {
      for (let op = this.queue.shift(); op && !this.aborted; op = this.queue.shift()) {
        if (op.kind === 'open') {
          this.handle = await io('creating a snapshot file', () => fsp.open(path.join(this.dir, op.name), 'wx'));
        } else if (op.kind === 'data') {
          await io('writing a snapshot file', () => writeAll(this.handle, op.chunks, op.bytes));
          this.queuedBytes -= op.bytes;
          this.wake();
        } else {
          const fh = this.handle;
          this.handle = undefined;
          await io('closing a snapshot file', async () => {
            await fh?.sync();
            await fh?.close();
          });
          this.logger.debug({ file: op.name, size: op.size, records: op.records }, 'snapshot file complete');
          this.onFileDone(op.name);
        }
      }
    } catch (err) {
      this.failure ??= toSyncProxyError(err, 'IO_ERROR', 'writing the snapshot');
      this.queue.length = 0;
      this.wake();
    }
  }

  private wake(): void {
    if (this.queuedBytes > MAX_QUEUED && !this.failure) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toSyncProxyError(err, 'IO_ERROR', what);
  }
}

/** Writes `chunks` at the file's current position, continuing after short writes. */
async function writeAll(fh: fsp.FileHandle | undefined, chunks: Buffer[], bytes: number): Promise<void> {
  if (!fh) throw new Error('snapshot file is not open');
  let pending = chunks;
  let left = bytes;
  while (left > 0) {
    const { bytesWritten } = await fh.writev(pending.slice(0, 1024));
    left -= bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const c of pending) {
      if (skip >= c.length) skip -= c.length;
      else {
        rest.push(skip > 0 ? c.subarray(skip) : c);
        skip = 0;
      }
    }
    pending = rest;
  }
}
