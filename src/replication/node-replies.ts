/**
 * Replies of the replica's own node as the pipeline hands them to checks: framed, not decoded.
 * The helpers read the few shapes the loader and applier need (+OK, :integer, -error text).
 */
import { ErrorCode, SyncProxyError } from '../errors';
import type { FramedReply } from '../resp/reply-framer';

/** Checks one reply; throwing fails the pipeline with that error. */
export type ReplyCheck = (reply: FramedReply) => void;
/**
 * Checks the reply of the `index`-th command of a `sendMany` batch. `reply` is a view reused for
 * every reply (no object per reply): read it during the call, never keep it.
 */
export type IndexedReplyCheck = (reply: ReplyView, index: number) => void;

/** A reply in the framer's buffer; `raw` is made only when asked for (error texts). */
export class ReplyView implements FramedReply {
  buffer: Buffer = Buffer.alloc(0);
  start = 0;
  end = 0;

  get type(): number {
    return this.buffer[this.start];
  }

  get raw(): Buffer {
    return this.buffer.subarray(this.start, this.end);
  }

  /** The value of a ':' reply, or undefined. */
  integer(): number | undefined {
    const buf = this.buffer;
    if (buf[this.start] !== 58) return undefined;
    let i = this.start + 1;
    const negative = buf[i] === 45;
    if (negative) i++;
    let n = 0;
    for (; i < this.end - 2; i++) {
      const c = buf[i] - 48;
      if (c < 0 || c > 9) return undefined;
      n = n * 10 + c;
    }
    return negative ? -n : n;
  }
}

/** Throws `code` naming `what` and the node's error unless `reply` is +OK. */
export function expectOk(reply: FramedReply, what: string, code: ErrorCode): void {
  if (reply.type !== 43) throw new SyncProxyError(code, `${what} failed on the node: ${errorText(reply)}`);
}

/** The text of an error reply without '-' and CRLF. */
export function errorText(reply: FramedReply): string {
  return reply.raw.toString('utf8', 1, Math.max(1, reply.raw.length - 2)).slice(0, 500);
}

/** The integer of a ':' reply, or undefined. */
export function integerOf(reply: FramedReply): number | undefined {
  if (reply.type !== 58) return undefined;
  return Number(reply.raw.toString('latin1', 1, reply.raw.length - 2));
}
