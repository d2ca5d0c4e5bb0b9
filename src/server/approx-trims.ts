/**
 * A client's XADD or XTRIM with approximate trimming (`~`): sent with a read of the stream's first
 * entry right behind it (read-backs.ts), so the write log gets the exact outcome
 * (src/source/stream-trims.ts: replayed as sent, the trim would remove another number of entries
 * on a replica). The client gets the command's own reply.
 */
import type { Request } from '../resp/request';
import { firstEntryRead } from '../source/stream-trims';
import type { WriteScope } from '../source/types';
import type { ClientSession } from './client-session';
import { queuedRead, sendWithReadBacks } from './read-backs';
import { READONLY_ERROR } from './refusals';

export function runApproxTrim(s: ClientSession, req: Request): Promise<void> | void {
  if (s.ctx.replication.role === 'replica') return s.reply(READONLY_ERROR);
  const args = req.args;
  const scope: WriteScope = { kind: 'keys', db: s.db, keys: [args[1]] };
  const dispatch = (): void => sendWithReadBacks(s, [{ args, raw: req.raw, write: true, scope }, queuedRead(firstEntryRead(args[1]))], scope);
  const wait = s.gate(scope);
  return wait ? wait.then(dispatch) : dispatch();
}
