/**
 * The role checks a transaction meets at EXEC, and the EXEC of a transaction that queued commands
 * the proxy answers itself.
 *
 * At EXEC the role may have changed since the commands were queued (another client's REPLICAOF):
 * as Redis does, EXEC is then refused as a whole — writes on a replica with READONLY, anything the
 * node would run while a replica's data is not confirmed with its MASTERDOWN text (Redis with
 * replica-serve-stale-data no refuses such an EXEC, PING included).
 *
 * REPLICAOF/SLAVEOF, ROLE, INFO, WAIT and SYNCPROXY inside MULTI are the proxy's own commands
 * (replication-commands.ts); the node never sees them. At EXEC the node's commands run first, as
 * one transaction under the role the transaction started with — Redis, too, runs the commands
 * queued after a REPLICAOF as the master it was at EXEC — then the proxy's commands in their
 * order (a ROLE queued before REPLICAOF still answers master). The client gets one array with
 * every answer in the order queued, as from Redis's EXEC.
 */
import * as encode from '../resp/encode';
import { arrayElements } from '../resp/reply-framer';
import { isReadBack } from '../source/script-images';
import type { WriteScope } from '../source/types';
import type { ClientSession } from './client-session';
import { READONLY_ERROR, errorReply } from './refusals';
import { handleReplicationCommand } from './replication-commands';
import { clientExecReply } from './scripting';

export interface Queued {
  args: Buffer[];
  raw: Buffer;
  write: boolean;
  scope?: WriteScope;
  /** A command the proxy answers itself (replication-commands.ts), never sent to the node. */
  local?: boolean;
}

/** The error a whole EXEC gets from the role as it is now; null when it may run. */
export function execRoleRefusal(s: ClientSession, queued: readonly Queued[]): Buffer | null {
  const nodeCommands = queued.filter((q) => !q.local);
  if (nodeCommands.length === 0) return null;
  const refusal = nodeCommands.some((q) => q.write) && s.ctx.replication.role === 'replica' ? READONLY_ERROR : s.readRefusal();
  return refusal ? execAbort(refusal) : null;
}

/** Redis's text for an EXEC refused as a whole: `-EXECABORT … because of: <the error>`. */
function execAbort(error: Buffer): Buffer {
  return encode.error(`EXECABORT Transaction discarded because of: ${error.toString('latin1', 1, error.length - 2)}`);
}

/**
 * EXEC of a transaction holding proxy commands: the node commands as one transaction, then the
 * proxy commands in their order; the reply interleaves the answers in the order queued.
 */
export async function execWithProxyCommands(s: ClientSession, queued: readonly Queued[], db: number, watched: Buffer[]): Promise<Buffer> {
  const sent = queued.filter((q) => !q.local);
  let answers: Buffer[] = [];
  if (sent.length > 0) {
    const scopes = sent.filter((q) => q.scope).map((q) => q.scope!);
    const raw = await new Promise<Buffer>((resolve) => {
      s.ctx.path.sendTransaction(db, sent, scopes, (reply, err) => resolve(reply ? clientExecReply(sent, reply.raw) : errorReply(err)), s.lanes, watched);
    });
    // The node refused the transaction as a whole (EXECABORT): nothing ran, the proxy's commands neither.
    if (raw[0] !== 42) return raw;
    answers = arrayElements(raw);
  }
  const replies: Buffer[] = [];
  let next = 0;
  for (const q of queued) {
    if (q.local) replies.push(await handleReplicationCommand(s, q.args[0].toString('latin1').toLowerCase(), q.args, q.raw));
    else if (!isReadBack(q.args)) replies.push(answers[next++] ?? encode.error('ERR no reply from the node for this command'));
  }
  return Buffer.concat([Buffer.from(`*${replies.length}\r\n`), ...replies]);
}

/** The db after the SELECTs among `queued` (an invalid index fails on the node and changes nothing). */
export function dbAfter(queued: readonly Queued[], db: number, dbCount: number): number {
  for (const q of queued) {
    if (q.args[0].toString('latin1').toLowerCase() !== 'select') continue;
    const target = Number(q.args[1].toString());
    if (Number.isInteger(target) && target >= 0 && target < dbCount) db = target;
  }
  return db;
}
