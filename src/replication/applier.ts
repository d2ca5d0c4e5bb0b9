/**
 * Follows the master's write log and applies each entry to the replica node, in order,
 * pipelined (entries are sent without waiting for earlier replies; replies are checked in order).
 *
 * Confirmation rule (DESIGN.md invariant 3, last clause): the replica has applied the log up to an
 * offset the master reported AFTER the snapshot: the master_offset of the first heartbeat of the
 * stream. `onCaughtUp` fires once, when the applied offset reaches it.
 */
import type { Logger } from 'pino';
import { NodeProfile, toNodeForm } from '../backend/node-profile';
import { SyncProxyError } from '../errors';
import { redactCommand } from '../logger';
import { decodeReply } from '../resp/decode';
import { FramedReply } from '../resp/reply-framer';
import type { LogEntry } from '../source/types';
import { NodePipeline } from './node-pipeline';
import { errorText } from './node-replies';
import type { ReplicaIdentity, SyncClientLike } from './sync-api';

export interface ApplyProgress {
  logId: string;
  /** Highest offset whose every reply was checked. */
  appliedOffset: number;
  /** Highest offset sent to the node. */
  sentOffset: number;
  /** Latest master offset seen (heartbeat or entry). */
  masterOffset: number;
  /** Master offset of the first heartbeat of the current stream: the catch-up target. */
  targetOffset?: number;
  lastIoMs: number;
  entriesApplied: number;
}

export interface FollowOptions {
  client: SyncClientLike;
  node: NodePipeline;
  replica: ReplicaIdentity;
  progress: ApplyProgress;
  logger: Logger;
  signal: AbortSignal;
  /** Fires once when appliedOffset >= the first heartbeat's master offset. */
  onCaughtUp: () => void;
  /** What the replica node honours: expiries are replayed in its form (node-profile.ts). */
  profile: NodeProfile;
  /** Holds entries past an offset (online verification reads the node at one offset). */
  gate?: ApplyGate;
}

/**
 * Stops the applier before entries past `limit` while set: the node then stays at one log offset
 * until `release`. Entries keep arriving from the master meanwhile and wait in the stream's
 * flow control (nothing is buffered here).
 */
export class ApplyGate {
  private limit?: number;
  private waiters: Array<() => void> = [];
  /** Entries past the check whose send is not finished (sentOffset not yet moved). */
  entering = 0;

  get holding(): number | undefined {
    return this.limit;
  }

  hold(limit: number): void {
    this.limit = limit;
    this.wake();
  }

  release(): void {
    this.limit = undefined;
    this.wake();
  }

  /** Waits while `offset` is past the limit; then the entry counts as entering until `entered`. */
  async pass(offset: number): Promise<void> {
    while (this.limit !== undefined && offset > this.limit) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.entering++;
  }

  entered(): void {
    this.entering--;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * Streams from `progress.appliedOffset + 1` until the stream fails or `signal` aborts; always
 * throws (the stream never ends successfully). Before throwing it waits for in-flight replies
 * so `appliedOffset` is exact and a reconnect can continue from appliedOffset + 1.
 */
export async function followLog(options: FollowOptions): Promise<never> {
  const { progress, node, logger } = options;
  progress.sentOffset = progress.appliedOffset;
  progress.targetOffset = undefined;
  let caughtUp = false;
  let selectedDb = -1;
  const checkCaughtUp = (): void => {
    if (!caughtUp && progress.targetOffset !== undefined && progress.appliedOffset >= progress.targetOffset) {
      caughtUp = true;
      options.onCaughtUp();
    }
  };

  try {
    const stream = options.client.streamLog({ logId: progress.logId, fromOffset: progress.appliedOffset + 1, replica: options.replica }, options.signal);
    for await (const message of stream) {
      progress.lastIoMs = Date.now();
      if (message.heartbeat) {
        progress.masterOffset = Math.max(progress.masterOffset, message.heartbeat.masterOffset);
        progress.targetOffset ??= message.heartbeat.masterOffset;
        checkCaughtUp();
      }
      const entry = message.entry;
      if (!entry) continue;
      if (entry.offset <= progress.sentOffset) continue; // already applied (a resent entry)
      if (entry.offset !== progress.sentOffset + 1) {
        throw new SyncProxyError('MALFORMED_RESPONSE', `write log jumped from offset ${progress.sentOffset} to ${entry.offset}`);
      }
      await options.gate?.pass(entry.offset);
      if (options.signal.aborted) throw options.signal.reason;
      if (entry.db !== selectedDb) {
        await node.sendArgs(['SELECT', String(entry.db)], (reply) => {
          if (reply.type !== 43) throw applyFailed(entry, `SELECT ${entry.db}`, errorText(reply));
        });
        selectedDb = entry.db;
      }
      // A transaction logged with a SELECT inside leaves the node connection in another db.
      if (entry.commands.some((c) => c[0]?.length === 6 && c[0].toString('latin1').toLowerCase() === 'select')) selectedDb = -1;
      await sendEntry(node, entry, options.profile, () => {
        progress.appliedOffset = entry.offset;
        progress.entriesApplied++;
        checkCaughtUp();
      });
      progress.sentOffset = entry.offset;
      options.gate?.entered();
      progress.masterOffset = Math.max(progress.masterOffset, entry.offset);
    }
    throw new SyncProxyError('MASTER_CONNECTION_LOST', 'the master ended the write-log stream');
  } catch (err) {
    // Settle what was sent so appliedOffset is exact; a node failure surfaces as its own error.
    const nodeError = await node.flush().then(() => undefined, (e: unknown) => e);
    if (nodeError && !options.signal.aborted) {
      logger.warn({ appliedOffset: progress.appliedOffset }, 'applying the write log failed on the node');
      throw nodeError;
    }
    throw err;
  }
}

/** One entry: a single command, or MULTI ... EXEC when it holds several (applied atomically). */
async function sendEntry(node: NodePipeline, entry: LogEntry, profile: NodeProfile, onApplied: () => void): Promise<void> {
  if (entry.commands.length === 0) throw new SyncProxyError('MALFORMED_RESPONSE', `write-log entry ${entry.offset} has no commands`);
  if (entry.commands.length === 1) {
    const args = toNodeForm(entry.commands[0], profile);
    await node.sendArgs(args, (reply) => {
      if (reply.type === 45) throw applyFailed(entry, redactCommand(args), errorText(reply));
      onApplied();
    });
    return;
  }
  await node.sendArgs(['MULTI'], (reply) => {
    if (reply.type !== 43) throw applyFailed(entry, 'MULTI', errorText(reply));
  });
  for (const logged of entry.commands) {
    const args = toNodeForm(logged, profile);
    await node.sendArgs(args, (reply) => {
      if (reply.type === 45) throw applyFailed(entry, redactCommand(args), errorText(reply));
    });
  }
  await node.sendArgs(['EXEC'], (reply) => {
    checkExec(entry, reply);
    onApplied();
  });
}

function checkExec(entry: LogEntry, reply: FramedReply): void {
  if (reply.type === 45) throw applyFailed(entry, 'EXEC', errorText(reply));
  const decoded = decodeReply(reply.raw);
  if (!Array.isArray(decoded)) throw applyFailed(entry, 'EXEC', 'the transaction was aborted');
  decoded.forEach((result, i) => {
    if (result instanceof Error) throw applyFailed(entry, redactCommand(entry.commands[i] ?? []), result.message);
  });
}

function applyFailed(entry: LogEntry, command: string, nodeError: string): SyncProxyError {
  return new SyncProxyError('APPLY_FAILED', `write-log entry ${entry.offset} (db ${entry.db}): the node refused "${command}": ${nodeError}`, { details: { offset: entry.offset } });
}
