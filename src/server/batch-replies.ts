/**
 * The replies of a batch sent to the node for one client command (ordered-path.ts): several
 * commands' replies made into one array, as EXEC's would be, and the reason an EXEC was refused.
 * Pure: no I/O.
 */
import type { ReplyCallback } from '../backend/node-connection';
import { SyncProxyError } from '../errors';
import type { FramedReply } from '../resp/reply-framer';

/**
 * Callbacks for `n` replies that hand `done` one array reply made of them (as EXEC's would be)
 * once all are in, or the first error (a link lost on the way).
 */
export function arrayOfReplies(n: number, done: ReplyCallback): (i: number) => ReplyCallback {
  const parts: Buffer[] = new Array<Buffer>(n);
  let left = n;
  let failed: SyncProxyError | undefined;
  return (i) => (reply, err) => {
    if (reply) parts[i] = Buffer.from(reply.raw);
    else failed ??= err ?? new SyncProxyError('INTERNAL', 'a batched command got no reply');
    if (--left > 0) return;
    if (failed) return done(null, failed);
    const raw = Buffer.concat([Buffer.from(`*${n}\r\n`), ...parts]);
    done({ raw, type: 42 });
  };
}

/**
 * EXEC's `-EXECABORT … because of previous errors.` for errors only the proxy saw: Redis's text
 * for an EXEC refused because of one error, `-EXECABORT Transaction discarded because of: <it>`.
 */
export function withAbortReason(reply: FramedReply, firstError: Buffer): FramedReply {
  if (!reply.raw.toString('latin1', 0, 64).startsWith('-EXECABORT Transaction discarded because of previous')) return reply;
  const raw = Buffer.from(`-EXECABORT Transaction discarded because of: ${firstError.toString('latin1', 1, firstError.length - 2)}\r\n`, 'latin1');
  return { raw, type: 45 };
}
