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
 * (replication-commands.ts); the node never sees them. Such a transaction runs in parts, in order:
 * each run of node commands as one transaction on the node, each proxy command in between as it
 * would run on its own. A command after a REPLICAOF meets the role it set: a write answers
 * READONLY, a read the gate's MASTERDOWN, as they would outside MULTI (Redis runs them under the
 * role the transaction started with). The client gets one array with every command's reply, as
 * from Redis's EXEC; it is atomic part by part, not as a whole.
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

/** Runs the parts one after the other; the EXEC's reply. `db`: the db the transaction starts in. */
export async function execInParts(s: ClientSession, queued: readonly Queued[], db: number, watched: Buffer[]): Promise<Buffer> {
  const replies: Buffer[] = [];
  let i = 0;
  while (i < queued.length) {
    const q = queued[i];
    if (q.local) {
      const name = q.args[0].toString('latin1').toLowerCase();
      replies.push(await handleReplicationCommand(s, name, q.args, q.raw));
      i++;
      continue;
    }
    let end = i;
    while (end < queued.length && !queued[end].local) end++;
    const part = queued.slice(i, end);
    const answers = await runPart(s, part, db, i === 0 ? watched : []);
    // The first part failing as a whole (the node's EXECABORT) is the EXEC's answer: nothing ran.
    if (!Array.isArray(answers)) {
      if (i === 0) return answers;
      replies.push(...clientCommands(part).map(() => answers));
    } else {
      replies.push(...answers);
    }
    db = dbAfter(part, db, s.ctx.dbCount());
    i = end;
  }
  return Buffer.concat([Buffer.from(`*${replies.length}\r\n`), ...replies]);
}

/**
 * One run of node commands: those the role refuses now get their refusal, the rest go to the
 * node as one transaction. One reply per client command (read-backs dropped), or one error for all.
 */
async function runPart(s: ClientSession, part: readonly Queued[], db: number, watched: Buffer[]): Promise<Buffer[] | Buffer> {
  const refusals: (Buffer | null)[] = [];
  const sent: Queued[] = [];
  let refusedScript = false;
  for (const q of part) {
    // A script's read-backs follow it: they go, or not, with it, and answer nothing of their own.
    if (isReadBack(q.args)) {
      if (!refusedScript) sent.push(q);
      continue;
    }
    const refusal = commandRefusal(s, q);
    refusedScript = refusal !== null;
    refusals.push(refusal);
    if (!refusal) sent.push(q);
  }
  let answered: Buffer[] = [];
  if (sent.length > 0) {
    const scopes = sent.filter((q) => q.scope).map((q) => q.scope!);
    const raw = await new Promise<Buffer>((resolve) => {
      s.ctx.path.sendTransaction(db, sent, scopes, (reply, err) => resolve(reply ? clientExecReply(sent, reply.raw) : errorReply(err)), s.lanes, watched);
    });
    if (raw[0] !== 42) return raw;
    answered = arrayElements(raw);
  }
  let next = 0;
  return refusals.map((refusal) => refusal ?? answered[next++] ?? encode.error('ERR no reply from the node for this command'));
}

const ALWAYS_RUN = new Set(['ping', 'echo', 'select']);

/** What the command would get on its own now (READONLY, MASTERDOWN), or null. */
function commandRefusal(s: ClientSession, q: Queued): Buffer | null {
  if (q.write) return s.ctx.replication.role === 'replica' ? READONLY_ERROR : null;
  return ALWAYS_RUN.has(q.args[0].toString('latin1').toLowerCase()) ? null : s.readRefusal();
}

function clientCommands(part: readonly Queued[]): Queued[] {
  return part.filter((q) => !isReadBack(q.args));
}

/** The db after the part's SELECTs (an invalid index fails on the node and changes nothing). */
export function dbAfter(part: readonly Queued[], db: number, dbCount: number): number {
  for (const q of part) {
    if (q.args[0].toString('latin1').toLowerCase() !== 'select') continue;
    const target = Number(q.args[1].toString());
    if (Number.isInteger(target) && target >= 0 && target < dbCount) db = target;
  }
  return db;
}
