/**
 * The node's function libraries in a snapshot (Redis 7 FUNCTION). Functions are node state outside
 * every database, so no key record carries them: the builder reads `FUNCTION DUMP` at the
 * snapshot's log offset and writes its payload as a `PSP.FUNCTIONS <payload>` record; the loader
 * sends `FUNCTION RESTORE <payload> FLUSH` (the replica's node ends with exactly the master's
 * libraries, as its keys end exactly the master's). FUNCTION LOAD/DELETE/FLUSH/RESTORE after the
 * offset reach the replica through the write log.
 *
 * Scripts loaded with SCRIPT LOAD are a cache and are not carried: EVALSHA of a script the replica
 * node has not seen answers NOSCRIPT, as on Redis after a restart (README, "Scripts").
 */
import { SyncProxyError } from '../errors';
import { NodeErrorReply, Reply } from '../resp/reply-reader';

/** What the builder needs of its reader connection. */
export interface FunctionDumpSource {
  call(command: ReadonlyArray<Buffer | string>): Promise<Reply>;
}

/**
 * The FUNCTION DUMP payload, or null where the node has no FUNCTION command (Pika, Redis < 7):
 * such a node has no libraries to carry. Any other answer fails the build (no silent skip).
 */
export async function readFunctionLibraries(conn: FunctionDumpSource): Promise<Buffer | null> {
  const reply = await conn.call(['FUNCTION', 'DUMP']);
  if (Buffer.isBuffer(reply)) return reply;
  if (reply instanceof NodeErrorReply && /unknown command|unknown subcommand/i.test(reply.message)) return null;
  const what = reply instanceof NodeErrorReply ? reply.message : typeof reply;
  throw new SyncProxyError('SNAPSHOT_BUILD_FAILED', `FUNCTION DUMP answered ${what}`);
}

const FUNCTION = Buffer.from('FUNCTION');
const RESTORE = Buffer.from('RESTORE');
const FLUSH = Buffer.from('FLUSH');

/** The command that puts a PSP.FUNCTIONS payload on the replica's node. */
export function functionRestoreCommand(payload: Buffer): Buffer[] {
  return [FUNCTION, RESTORE, payload, FLUSH];
}
