/**
 * EVAL/EVALSHA/FCALL, SCRIPT and FUNCTION through the proxy.
 *
 * A script runs on the node; its effect is logged as the after-images of the keys it declares
 * (src/source/script-images.ts): `<script>; DUMP k; PTTL k; ...` go one right after the other on
 * the lane of its keys (OrderedPath.sendBatch: every write to a key travels its lane, so nothing
 * reaches them in between; a key expiring between DUMP and PTTL is logged as deleted), the log is
 * written from their replies as from an EXEC's, and the client gets only the script's own reply.
 * Inside a client's MULTI the read-backs are queued in it (transaction.ts). A node without DUMP/RESTORE
 * gets the script as a plain write, logged as sent if the node runs it (Pika has no scripting and
 * answers with its own error: nothing is logged).
 *
 * SCRIPT LOAD/FLUSH and FUNCTION LOAD/DELETE/FLUSH/RESTORE change the node's script or function
 * state: they are logged as sent, so a replica's node gets them too. The other subcommands
 * (SCRIPT EXISTS, FUNCTION LIST/DUMP/STATS, the KILLs) are forwarded and never logged.
 */
import { SyncProxyError } from '../errors';
import type { Request } from '../resp/request';
import { arrayElements } from '../resp/reply-framer';
import { captureScript, isReadBack, isScriptWrite } from '../source/script-images';
import type { WriteScope } from '../source/types';
import type { ClientSession } from './client-session';
import { declaredKeys } from './command-table';
import { READONLY_ERROR, errorReply } from './refusals';
import { queuedRead, sendWithReadBacks } from './read-backs';

/** Subcommands that change the node's script cache or function libraries (logged as sent). */
const STATE_WRITES: Record<string, ReadonlySet<string>> = {
  script: new Set(['load', 'flush']),
  function: new Set(['load', 'delete', 'flush', 'restore']),
};

const PROFILE_WAIT_MS = 5000;
const PROFILE_POLL_MS = 10;

/** Commands this module runs (the _RO forms are plain reads in the command table). */
export function isScriptingCommand(name: string): boolean {
  return isScriptWrite(name) || name === 'script' || name === 'function';
}

/** SCRIPT LOAD/FLUSH, FUNCTION LOAD/DELETE/FLUSH/RESTORE: changes the node's script state. */
export function changesScriptState(name: string, args: readonly Buffer[]): boolean {
  const sub = args[1]?.toString('latin1').toLowerCase();
  return sub !== undefined && (STATE_WRITES[name]?.has(sub) ?? false);
}

/** Whether scripts are captured by read-backs on this proxy's node (it has DUMP and RESTORE). */
export function capturesAfterImages(s: ClientSession): boolean {
  return s.ctx.nodeProfile()?.dumpRestore === true;
}

/**
 * A script before the node was probed: whether its effect can be read back (DUMP/RESTORE) is not
 * known yet, and logging it as sent could make replicas diverge; the client is told to retry.
 */
export function scriptRefusal(s: ClientSession, name: string): Buffer | null {
  if (!isScriptWrite(name) || s.ctx.nodeProfile()) return null;
  return errorReply(new SyncProxyError('BACKEND_UNAVAILABLE', `${name.toUpperCase()} waits for the node's profile (how a script's effect is logged depends on it): retry`));
}

/** The read-back entries to queue right after a script in a transaction (none if not captured). */
export function readBacksToQueue(s: ClientSession, name: string, args: Buffer[]): { args: Buffer[]; raw: Buffer; write: boolean }[] {
  if (!isScriptWrite(name) || !capturesAfterImages(s)) return [];
  return captureScript(args, declaredKeys(args) ?? []).map(queuedRead);
}

/** Runs one scripting command outside a transaction. */
export function runScripting(s: ClientSession, name: string, req: Request): Promise<void> | void {
  if (isScriptWrite(name)) return runScript(s, req);
  if (req.argc === 2 && isOnOwnConnection(req.args[1])) return runOnOwnConnection(s, req);
  if (!changesScriptState(name, req.args)) return s.forward(req);
  if (s.ctx.replication.role === 'replica') return s.reply(READONLY_ERROR);
  // No keys, but the gate still matters: a snapshot build reads FUNCTION DUMP at its log offset
  // while writes are held; a FUNCTION LOAD slipping in before that read would be in the snapshot
  // and in the log after it, and its replay would fail on the replica ("already exists").
  return s.sendGatedWrite(req, { kind: 'keys', db: s.db, keys: [] });
}

/** SCRIPT KILL, FUNCTION KILL and FUNCTION STATS (what a running script does not hold up). */
export function isOnOwnConnection(sub: Buffer): boolean {
  const name = sub.toString('latin1').toLowerCase();
  return name === 'kill' || name === 'stats';
}

/**
 * SCRIPT KILL / FUNCTION KILL / FUNCTION STATS go on a connection of their own: a running script
 * holds the lane it runs on, so behind it on a lane they would wait
 * forever; sent this way they reach the node while the script runs, as a second client's would.
 */
async function runOnOwnConnection(s: ClientSession, req: Request): Promise<void> {
  await s.repliesSettled();
  const slot = s.slot();
  const conn = s.ctx.dedicatedConnection();
  try {
    await conn.connect();
    await new Promise<void>((resolve) => conn.send(req.raw, (reply, err) => {
      s.fill(slot, reply ? reply.raw : errorReply(err));
      resolve();
    }));
  } catch (err) {
    s.fill(slot, errorReply(err));
  } finally {
    conn.destroy();
  }
}

function runScript(s: ClientSession, req: Request): Promise<void> | void {
  if (s.ctx.replication.role === 'replica') return s.reply(READONLY_ERROR);
  // Right after the proxy starts or relinks, the probe may still run: wait for it a little.
  if (!s.ctx.nodeProfile()) return profileProbed(s).then(() => runScriptWithProfile(s, req));
  return runScriptWithProfile(s, req);
}

/** Polls for the node profile for at most PROFILE_WAIT_MS (the probe usually takes milliseconds). */
async function profileProbed(s: ClientSession): Promise<void> {
  for (const deadline = Date.now() + PROFILE_WAIT_MS; !s.ctx.nodeProfile() && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, PROFILE_POLL_MS));
  }
}

function runScriptWithProfile(s: ClientSession, req: Request): Promise<void> | void {
  const refusal = scriptRefusal(s, req.name);
  if (refusal) return s.reply(refusal);
  const keys = declaredKeys(req.args);
  const scope: WriteScope = keys ? { kind: 'keys', db: s.db, keys } : { kind: 'all' };
  const dispatch = (): void => {
    // Other clients' commands ask the node whether it is busy with it meanwhile (script-watch.ts).
    const ended = s.ctx.scripts.started(s);
    if (!capturesAfterImages(s)) {
      const slot = s.slot();
      return s.ctx.path.sendWrite(s.db, req, scope, (reply, err) => {
        ended();
        s.fill(slot, reply ? reply.raw : errorReply(err));
      }, 0, undefined, s.lanes);
    }
    const args = req.args; // one array: the script is marked captured by identity
    const queued = [{ args, raw: req.raw, write: true, scope }, ...readBacksToQueue(s, req.name, args)];
    // On the lane of its declared keys (exclusive when they span lanes or are unknown), the
    // read-backs right behind it; not inside MULTI, so the node meets a bare EVAL (sendBatch).
    sendWithReadBacks(s, queued, scope, ended);
  };
  const wait = s.gate(scope);
  return wait ? wait.then(dispatch) : dispatch();
}

/** EXEC's reply as the client must see it: without the elements of the proxy's read-backs. */
export function clientExecReply(queued: readonly { args: Buffer[] }[], execReplyRaw: Buffer): Buffer {
  if (execReplyRaw[0] !== 42 || !queued.some((q) => isReadBack(q.args))) return execReplyRaw;
  const elements = arrayElements(execReplyRaw);
  const kept = elements.filter((_, i) => !queued[i] || !isReadBack(queued[i].args));
  return Buffer.concat([Buffer.from(`*${kept.length}\r\n`), ...kept]);
}
