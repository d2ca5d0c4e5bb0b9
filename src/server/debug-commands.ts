/**
 * The DEBUG subcommands that reload the node's data from a file: they change data behind the
 * write log's back unless proven otherwise, so each goes to the node on terms (the others pass or
 * are refused by refusals.ts).
 *
 * - DEBUG LOADAOF loads the node's AOF back: the same data while the node writes one (checked
 *   with `CONFIG GET appendonly` first, in the client's order); refused otherwise.
 * - DEBUG RELOAD saves, then loads that file back: the same data. NOSAVE loads whatever file an
 *   earlier save left, and a failed load may leave the node with part of its data (Redis empties
 *   it first): after either the write log starts a new generation once the node answered, so
 *   replicas run a full sync instead of following a log that no longer describes the node. The
 *   reload runs with every lane held (no write of another client meets it half done). On a
 *   replica NOSAVE is refused: its data must stay its master's; a failed load there starts a new
 *   full sync from its master.
 */
import { decodeReply } from '../resp/decode';
import * as encode from '../resp/encode';
import { arrayElements } from '../resp/reply-framer';
import type { Request } from '../resp/request';
import type { ClientSession } from './client-session';
import { errorReply, reloadKeepsData } from './refusals';

const LOADAOF_WITHOUT_AOF = encode.error('ERR DEBUG LOADAOF is refused by pika-sync-proxy: the node does not write an AOF (appendonly no), so loading one would change data outside the write log');
const NOSAVE_ON_REPLICA = encode.error("ERR DEBUG RELOAD NOSAVE is refused by pika-sync-proxy on a replica: it would load data its master's write log does not describe");
const EVERY_LANE = Object.freeze({ kind: 'all' as const });

/** The DEBUG subcommand this module runs (outside MULTI), if it is one. */
export function reloadKind(args: readonly Buffer[]): 'loadaof' | 'reload' | null {
  const sub = args[1]?.toString('latin1').toLowerCase();
  if (sub === 'loadaof' && args.length === 2) return 'loadaof';
  return sub === 'reload' ? 'reload' : null;
}

export function runDebugReload(s: ClientSession, req: Request): Promise<void> | void {
  return reloadKind(req.args) === 'loadaof' ? debugLoadAof(s, req) : debugReload(s, req);
}

async function debugLoadAof(s: ClientSession, req: Request): Promise<void> {
  const appendonly = await new Promise<string>((resolve) => {
    s.ctx.path.send(s.db, encode.encodeCommand(['CONFIG', 'GET', 'appendonly']), (reply) => {
      const decoded = reply ? decodeReply(reply.raw) : null;
      resolve(Array.isArray(decoded) && Buffer.isBuffer(decoded[1]) ? decoded[1].toString() : '');
    }, s.lanes);
  });
  if (appendonly !== 'yes') return s.reply(LOADAOF_WITHOUT_AOF);
  s.forward(req);
}

function debugReload(s: ClientSession, req: Request): Promise<void> | void {
  const keepsData = reloadKeepsData(req.args);
  if (!keepsData && s.ctx.replication.role === 'replica') return s.reply(NOSAVE_ON_REPLICA);
  const slot = s.slot();
  return new Promise<void>((resolve) => {
    // A batch of one that names no key: it leaves once every lane is drained and held.
    s.ctx.path.sendBatch(s.db, [{ args: req.args, raw: req.raw, write: false }], [EVERY_LANE], (reply, err) => {
      const answer = reply ? (arrayElements(reply.raw)[0] ?? reply.raw) : errorReply(err);
      if (!changedData(answer, keepsData)) {
        s.fill(slot, answer);
        return resolve();
      }
      const reason = `DEBUG RELOAD ${keepsData ? 'failed to load' : 'NOSAVE'}: the node's data may no longer be what the write log describes`;
      s.ctx.path.restartLog(reason);
      // A replica's node no longer holds what its confirmed sync proved: sync it again (reads are
      // refused from the answer on).
      const resynced = s.ctx.replication.role === 'replica' ? s.ctx.replication.resync(reason) : Promise.resolve();
      void resynced.catch((err: unknown) => s.ctx.logger.error({ err: String(err) }, 'full sync after DEBUG RELOAD could not start')).finally(() => {
        s.fill(slot, answer);
        resolve();
      });
    }, s.lanes);
  });
}

/**
 * Whether a DEBUG RELOAD answered `answer` may have left other data than before: a NOSAVE that
 * loaded, or a load that failed after the flush (Redis: "Error trying to load the RDB dump"). An
 * error before any load (DEBUG not enabled, a bad option, a failed save) changed nothing.
 */
function changedData(answer: Buffer, keepsData: boolean): boolean {
  if (answer[0] !== 45) return !keepsData; // '-'
  return /\bload/i.test(answer.toString('latin1'));
}
