/**
 * Turns writes the node executed into write-log entries (the data path calls it as each reply
 * arrives, so entries follow the node's order on each lane). A write the log cannot hold starts a
 * new log generation: replicas resync instead of silently diverging.
 */
import type { Logger } from 'pino';
import type { Request } from '../resp/request';
import { execToLogCommands, replaysAsSent, toLogCommands } from '../source/log-rewrite';

/** The parts of the write log the data path uses. */
export interface LogSink {
  append(db: number, commands: Buffer[][]): number;
  /** `append(db, [args])` for the request's own bytes `buf[start, end)` (a RESP multibulk). */
  appendRequest(db: number, buf: Buffer, start: number, end: number): number;
  reset(reason: string): void;
  readonly lastOffset: number;
}

export class WriteRecorder {
  /** When false (replica role) nothing is appended; client writes are refused there anyway. */
  logging = true;

  constructor(
    readonly log: LogSink,
    private readonly logger: Logger,
  ) {}

  /**
   * Logs one executed write. A write that replays as sent is logged from its request bytes (the
   * hot path: no view, no clock read).
   */
  write(db: number, req: Request, replyBuf: Buffer, replyStart: number, replyEnd: number): void {
    if (!this.logging) return;
    try {
      if (replaysAsSent(req.name, req.argc)) {
        this.log.appendRequest(db, req.buf, req.start, req.end);
        return;
      }
      const commands = toLogCommands(req.args, replyBuf.subarray(replyStart, replyEnd), Date.now());
      if (commands && commands.length > 0) this.log.append(db, commands);
    } catch (err) {
      this.failed(err);
    }
  }

  transaction(db: number, queued: { args: Buffer[]; write: boolean }[], execReplyRaw: Buffer): void {
    if (!this.logging) return;
    try {
      const writes = new Set(queued.filter((q) => q.write).map((q) => q.args));
      const commands = execToLogCommands(queued.map((q) => q.args), execReplyRaw, Date.now(), (args) => writes.has(args));
      if (commands && commands.length > 0) this.log.append(db, commands);
    } catch (err) {
      this.failed(err);
    }
  }

  private failed(err: unknown): void {
    this.logger.error({ err: (err as Error).message }, 'could not log an executed write; resetting the write log');
    this.log.reset(`append failed: ${(err as Error).message}`);
  }
}
