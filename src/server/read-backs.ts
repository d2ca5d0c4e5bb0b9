/**
 * A client's write sent with reads of the proxy's own right behind it (a script's after-images,
 * an approximate trim's first entry): one batch on the write's lane, held with the lanes of its
 * scope, so no other write reaches its keys between them, and the write log is made from the
 * reads' replies (src/source/log-rewrite.ts). The client gets the write's own reply only.
 */
import * as encode from '../resp/encode';
import { arrayElements } from '../resp/reply-framer';
import type { WriteScope } from '../source/types';
import type { ClientSession } from './client-session';
import type { QueuedCommand } from './ordered-path';
import { errorReply } from './refusals';

/** A read of the proxy's to queue right behind a client's write (in a batch or a transaction). */
export function queuedRead(args: Buffer[]): QueuedCommand {
  return { args, raw: encode.encodeCommand(args), write: false };
}

/** Sends `queued` (the write, then its reads) as one batch; `answered` runs when the node answered. */
export function sendWithReadBacks(s: ClientSession, queued: QueuedCommand[], scope: WriteScope, answered?: () => void): void {
  const slot = s.slot();
  s.ctx.path.sendBatch(s.db, queued, [scope], (reply, err) => {
    answered?.();
    if (!reply) return s.fill(slot, errorReply(err));
    // The batch's first element is the write's own reply.
    s.fill(slot, reply.type === 42 ? (arrayElements(reply.raw)[0] ?? reply.raw) : reply.raw);
  }, s.lanes);
}
