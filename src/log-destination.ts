/**
 * The log destination of the CLI: pino JSON lines to a file descriptor (stdout), written
 * asynchronously, that never holds the process.
 *
 * Why not pino's default (sonic-boom on fd 1): its exit flush (`flushSync`) retries every write
 * error, EPIPE included, every 100 ms forever — a proxy whose stdout reader went away (`| head`)
 * never exits after SIGTERM. Here a write error other than EAGAIN (EPIPE, EBADF, EIO, ...) marks
 * the destination gone: later lines are dropped and counted, never retried. EAGAIN (a full
 * non-blocking pipe) is retried, but the queue is bounded (lines beyond it are dropped) and the
 * synchronous flush at exit gives up after `flushTimeoutMs`.
 */
import fs from 'node:fs';

/** Lines queued beyond this many bytes are dropped (a stalled reader must not eat memory). */
export const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/** Wait before writing again after EAGAIN. */
const EAGAIN_RETRY_MS = 20;
/** Pause between synchronous attempts at exit while the pipe is full. */
const FLUSH_SPIN_MS = 5;

export interface LogDestinationOptions {
  fd: number;
  maxQueuedBytes?: number;
  /** How long flushSync() keeps retrying a full pipe before it drops the rest. */
  flushTimeoutMs?: number;
}

export class LogDestination {
  /** Lines dropped: the destination was gone, or the queue was full. */
  dropped = 0;
  /** The error that ended writing (EPIPE, ...); undefined while writing works. */
  failure?: NodeJS.ErrnoException;
  private queue: string[] = [];
  private queuedBytes = 0;
  private writing = false;
  private retryTimer?: NodeJS.Timeout;
  /** The chunk an EAGAIN left unwritten, waiting for retryTimer. */
  private pending?: Buffer;
  private readonly fd: number;
  private readonly maxQueuedBytes: number;
  private readonly flushTimeoutMs: number;

  constructor(options: LogDestinationOptions) {
    this.fd = options.fd;
    this.maxQueuedBytes = options.maxQueuedBytes ?? MAX_QUEUED_BYTES;
    this.flushTimeoutMs = options.flushTimeoutMs ?? 1000;
  }

  get gone(): boolean {
    return this.failure !== undefined;
  }

  /** pino's DestinationStream: queue one line; never throws, never blocks. */
  write(line: string): void {
    if (this.gone) {
      this.dropped++;
      return;
    }
    const bytes = Buffer.byteLength(line);
    if (this.queuedBytes + bytes > this.maxQueuedBytes) {
      this.dropped++;
      return;
    }
    this.queue.push(line);
    this.queuedBytes += bytes;
    if (!this.writing && !this.retryTimer) this.writeNext();
  }

  /** Writes what is queued synchronously, within flushTimeoutMs; drops the rest. Never throws. */
  flushSync(): void {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    // An asynchronous write may be running on the thread pool: what it holds is not in the queue.
    let buf = Buffer.concat([this.pending ?? Buffer.alloc(0), Buffer.from(this.queue.join(''))]);
    if (this.pending) this.writing = false;
    this.pending = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    const deadline = Date.now() + this.flushTimeoutMs;
    while (buf.length > 0 && !this.gone) {
      try {
        buf = buf.subarray(fs.writeSync(this.fd, buf));
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code !== 'EAGAIN' || Date.now() >= deadline) {
          if (e.code !== 'EAGAIN') this.failure = e;
          this.dropped++;
          return;
        }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, FLUSH_SPIN_MS);
      }
    }
  }

  private writeNext(): void {
    if (this.gone || this.queue.length === 0) return;
    const chunk = Buffer.from(this.queue.join(''));
    this.queue = [];
    this.queuedBytes = 0;
    this.writing = true;
    this.writeChunk(chunk);
  }

  private writeChunk(chunk: Buffer): void {
    fs.write(this.fd, chunk, 0, chunk.length, null, (err, written) => {
      if (err) {
        if (err.code === 'EAGAIN' && !this.gone) {
          this.pending = chunk;
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.pending = undefined;
            this.writeChunk(chunk);
          }, EAGAIN_RETRY_MS).unref();
          return;
        }
        this.writing = false;
        this.fail(err);
        return;
      }
      if (written < chunk.length) return this.writeChunk(chunk.subarray(written));
      this.writing = false;
      this.writeNext();
    });
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.failure ??= err;
    this.dropped += this.queue.length + 1;
    this.queue = [];
    this.queuedBytes = 0;
  }
}
