/**
 * A client's XADD or XTRIM with approximate trimming (`~`): sent with a read of the stream's first
 * entry right behind it, on the key's lane with nothing between (sendBatch), so the write log
 * gets the exact outcome (src/source/stream-trims.ts: replayed as sent, the trim would remove
 * another number of entries on a replica). The client gets the command's own reply.
 */
import type { Request } from '../resp/request';
import * as encode from '../resp/encode';
import { arrayElements } from '../resp/reply-framer';
import { firstEntryRead } from '../source/stream-trims';
import type { WriteScope } from '../source/types';
import type { ClientSession } from './client-session';
import { READONLY_ERROR, errorReply } from './refusals';

export { isApproxTrim } from '../source/stream-trims';

export function runApproxTrim(s: ClientSession, req: Request): Promise<void> | void {
  if (s.ctx.replication.role === 'replica') return s.reply(READONLY_ERROR);
  const args = req.args;
  const scope: WriteScope = { kind: 'keys', db: s.db, keys: [args[1]] };
  const dispatch = (): void => {
    const slot = s.slot();
    const read = firstEntryRead(args[1]);
    const queued = [{ args, raw: req.raw, write: true, scope }, { args: read, raw: encode.encodeCommand(read), write: false }];
    s.ctx.path.sendBatch(s.db, queued, [scope], (reply, err) => {
      if (!reply) return s.fill(slot, errorReply(err));
      s.fill(slot, reply.type === 42 ? (arrayElements(reply.raw)[0] ?? reply.raw) : reply.raw);
    }, s.lanes);
  };
  const wait = s.gate(scope);
  return wait ? wait.then(dispatch) : dispatch();
}

/** The read to queue right behind an approximate trim inside a client's MULTI. */
export function trimReadBackToQueue(args: Buffer[]): { args: Buffer[]; raw: Buffer; write: boolean }[] {
  const read = firstEntryRead(args[1]);
  return [{ args: read, raw: encode.encodeCommand(read), write: false }];
}
