/**
 * Where each client command goes once the session has parsed and admitted it (authenticated, not
 * held by a busy script): by the command table's category to the connection, replication,
 * transaction, pub/sub, scripting and blocking handlers, to the node as a read, or to the ordered
 * path as a logged write. Refusals (replica writes, refused and unknown writes) are answered here.
 */
import * as encode from '../resp/encode';
import type { Request } from '../resp/request';
import type { WriteScope } from '../source/types';
import { isApproxTrim } from '../source/stream-trims';
import { runApproxTrim } from './approx-trims';
import { runBlocking } from './blocking-runner';
import { runBlockingRead } from './blocking-read';
import type { ClientSession } from './client-session';
import { CommandSpec, arityOk, hasBlockOption } from './command-table';
import { handleConnectionCommand } from './connection-commands';
import { reloadKind, runDebugReload } from './debug-commands';
import { maxmemoryOf, runConfigSetMaxmemory } from './memory-limit';
import { PubSubMode } from './pubsub-mode';
import { READONLY_ERROR, adminRefusal, errorReply, refusalReason, unknownWriteRefusal } from './refusals';
import { handleReplicationCommand } from './replication-commands';
import { isScriptingCommand, runScripting } from './scripting';
import { pipeReplicationStream } from './sync-pipe';
import { Transaction } from './transaction';

/** Commands a client in MULTI runs at once instead of queueing. */
const NOT_QUEUED = new Set(['exec', 'discard', 'multi', 'watch', 'quit', 'reset']);

/** The scope of a write nobody asked about (no build, no WATCH, no parked client). */
const NO_SCOPE: WriteScope = Object.freeze({ kind: 'keys', db: 0, keys: [] as Buffer[] });

/**
 * Runs `req` (named `name`, `spec` from the table or undefined) for `session`; a returned promise
 * holds the client's later commands. `again` runs the command from the start (after pub/sub's
 * wait for earlier subscriptions).
 */
export function dispatch(session: ClientSession, name: string, spec: CommandSpec | undefined, req: Request, again: () => Promise<void> | void): Promise<void> | void {
  if (session.pubsub) {
    const wait = session.pubsub.waitBefore(name);
    if (wait) return wait.then(again);
    if (session.pubsub.owns(name)) return session.pubsub.handle(name, req.args, req.raw);
  }
  if (spec && !arityOk(spec, req.argc)) {
    session.transaction?.abort();
    return session.reply(encode.error(`ERR wrong number of arguments for '${name}' command`));
  }
  if (session.transaction && !NOT_QUEUED.has(name)) {
    const queued = session.transaction.queue(name, spec, req.args, req.raw);
    if (Buffer.isBuffer(queued)) return session.reply(queued);
    // The node's queue-time answer (memory-limit.ts): later commands need not wait for it.
    const slot = session.slot();
    void queued.then((answer) => session.fill(slot, answer));
    return;
  }
  if (!spec) return runUnknown(session, name, req);
  if (isScriptingCommand(name)) return runScripting(session, name, req);
  switch (spec.category) {
    case 'connection':
      return replyMaybeAsync(session, handleConnectionCommand(session, name, req.args));
    case 'replication':
      if (name === 'sync' || name === 'psync') return pipeReplicationStream(session, req.raw);
      return replyMaybeAsync(session, handleReplicationCommand(session, name, req.args, req.raw));
    case 'transaction':
      return Transaction.handle(session, name, req.args);
    case 'pubsub':
      return PubSubMode.enter(session, name, req);
    case 'refused':
      return session.reply(encode.error(`ERR '${name}' is not supported through pika-sync-proxy: ${refusalReason(name)}`));
    case 'admin': {
      if (name === 'debug' && reloadKind(req.args)) return runDebugReload(session, req);
      const refusal = adminRefusal(name, req);
      if (refusal) return session.reply(refusal);
      const maxmemory = name === 'config' ? maxmemoryOf(req.args) : null;
      return maxmemory === null ? session.forward(req) : runConfigSetMaxmemory(session, req, maxmemory);
    }
    case 'read':
      if (name === 'xread' && hasBlockOption(req.args)) return runBlockingRead(session, req.raw);
      return session.forwardRead(req, spec.bulky);
    case 'write':
      if (session.ctx.replication.role === 'replica') return session.reply(READONLY_ERROR);
      if (name === 'xreadgroup' && hasBlockOption(req.args)) return runBlocking(session, name, req.args);
      return write(session, spec, req);
    case 'blocking':
      if (session.ctx.replication.role === 'replica') return session.reply(READONLY_ERROR);
      return runBlocking(session, name, req.args);
  }
}

/** A command the table does not know: forwarded as a read unless the node says it writes. */
function runUnknown(session: ClientSession, name: string, req: Request): Promise<void> | void {
  const unknown = session.ctx.unknownCommands;
  const writes = unknown.known(name);
  if (writes === false) return session.forwardRead(req);
  if (writes === true) return session.reply(unknownWriteRefusal(name));
  return unknown.writes(name).then((w) => (w ? session.reply(unknownWriteRefusal(name)) : session.forwardRead(req)));
}

function replyMaybeAsync(session: ClientSession, result: Buffer | Promise<Buffer>): Promise<void> | void {
  if (Buffer.isBuffer(result)) return session.reply(result);
  const slot = session.slot();
  return result.then((data) => session.fill(slot, data), (err) => session.fill(slot, errorReply(err)));
}

/** A write on a master: logged by the ordered path once the node answered it. */
function write(session: ClientSession, spec: CommandSpec, req: Request): Promise<void> | void {
  if ((spec.name === 'xadd' || spec.name === 'xtrim') && isApproxTrim(req.args)) return runApproxTrim(session, req);
  // Keys are worked out only when someone needs them: several lanes, a snapshot build, a
  // WATCH, a parked pop.
  const ctx = session.ctx;
  const scope = ctx.path.keyed || ctx.writeGate() || ctx.watches.active || ctx.blocked.active ? session.scopeOf(spec, req.args) : NO_SCOPE;
  return session.sendGatedWrite(req, scope);
}
