/**
 * SYNCPROXY VERIFY on a streaming replica: compares its node with the master at one write-log
 * offset while clients keep writing to the master.
 *
 * 1. The applier is held at the offset it has sent (ApplyGate) and drains: the node is at A.
 * 2. The master answers GetDigest with the digests of a snapshot at L >= A (building one when its
 *    current snapshot is older than A): its node's content right after offset L.
 * 3. The applier is let through to exactly L and held again; the replica node is read and its
 *    digests compared with the master's (ranges that differ: key by key, through GetDigest again).
 * 4. The applier goes on. Entries that arrived meanwhile wait in the stream's flow control, so the
 *    replica lags for the time of the node read and then catches up.
 */
import type { Logger } from 'pino';
import { SyncProxyError } from '../errors';
import type { ApplyGate, ApplyProgress } from '../replication/applier';
import type { NodeAddress } from '../replication/node-pipeline';
import type { DigestAnswer, DigestQuery, ReplicaIdentity, SyncClientLike } from '../replication/sync-api';
import { sleep } from '../retry';
import type { KeyType } from '../source/types';
import { digestNode } from './dataset-readers';
import { ContentReport, compareContent } from './verify-content';

/** How long the applier may take to reach an offset before the verification gives up. */
const REACH_OFFSET_MS = 60_000;
const SNAPSHOT_POLL_MS = 500;

export interface OnlineVerifyDeps {
  client: SyncClientLike;
  replica: ReplicaIdentity;
  progress: ApplyProgress;
  gate: ApplyGate;
  node: NodeAddress;
  databases: number;
  /** How long to wait for the master's snapshot build. */
  snapshotWaitMs: number;
  logger: Logger;
  signal: AbortSignal;
}

export type OnlineReport = ContentReport & { logOffset: number; snapshotId: string };

export async function verifyOnline(deps: OnlineVerifyDeps): Promise<OnlineReport> {
  const { client, progress, gate, signal } = deps;
  const getDigest = client.getDigest?.bind(client);
  if (!getDigest) throw new SyncProxyError('INTERNAL', 'this sync client cannot ask the master for digests');
  let answer: DigestAnswer | undefined;
  gate.hold(progress.sentOffset);
  try {
    // An entry that passed the gate just before the hold is still sent: the node settles at the
    // offset after it, which becomes the held one.
    const held = await settle(progress, gate, signal);
    gate.hold(held);
    const report = await compareContent(
      async (digest, onlyRanges) => {
        const query: DigestQuery = { replica: deps.replica, logId: progress.logId, minLogOffset: held, cutoffMs: digest.cutoffMs, waitMs: deps.snapshotWaitMs };
        if (onlyRanges) {
          const keys = await getDigest({ ...query, snapshotId: answer!.snapshotId, ranges: [...onlyRanges] });
          digest.absorb(keys.ranges, keys.keys.map((k) => ({ db: k.db, key: k.key, type: k.type as KeyType, expireAtMs: k.expireAtMs, a: k.a, b: k.b })));
          return;
        }
        answer = await digestOfSnapshot(getDigest, query, deps.snapshotWaitMs, signal);
        if (answer.logOffset < held) throw new SyncProxyError('MALFORMED_RESPONSE', `the master's digest is of offset ${answer.logOffset}, before the replica's ${held}`);
        // The replica's node moves to the master snapshot's offset, and stays there.
        gate.hold(answer.logOffset);
        await reach(progress, answer.logOffset, signal);
        digest.absorb(answer.ranges);
      },
      (digest, onlyRanges) => digestNode(deps.node, Array.from({ length: Math.max(1, deps.databases) }, (_, i) => i), digest, deps.logger, signal, onlyRanges),
      true,
    );
    return { ...report, logOffset: answer!.logOffset, snapshotId: answer!.snapshotId };
  } finally {
    gate.release();
  }
}

/** GetDigest, asking again while the master builds its snapshot (within `waitMs`). */
async function digestOfSnapshot(getDigest: (q: DigestQuery) => Promise<DigestAnswer>, query: DigestQuery, waitMs: number, signal: AbortSignal): Promise<DigestAnswer> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await getDigest({ ...query, waitMs: Math.max(0, deadline - Date.now()) });
    } catch (err) {
      if (signal.aborted || !(err instanceof SyncProxyError) || err.code !== 'SNAPSHOT_BUILDING' || Date.now() >= deadline) throw err;
      await sleep(SNAPSHOT_POLL_MS, signal);
    }
  }
}

/** Waits until nothing is entering or unanswered; the offset the node is then at. */
async function settle(progress: ApplyProgress, gate: ApplyGate, signal: AbortSignal): Promise<number> {
  const deadline = Date.now() + REACH_OFFSET_MS;
  while (gate.entering > 0 || progress.appliedOffset !== progress.sentOffset) {
    if (signal.aborted) throw signal.reason;
    if (Date.now() > deadline) throw new SyncProxyError('MASTER_TIMEOUT', `the replica's applier did not settle within ${REACH_OFFSET_MS} ms (applied ${progress.appliedOffset}, sent ${progress.sentOffset})`);
    await sleep(5, signal);
  }
  return progress.appliedOffset;
}

/** Waits until the applier has applied (every reply checked) exactly up to `offset`. */
async function reach(progress: ApplyProgress, offset: number, signal: AbortSignal): Promise<number> {
  const deadline = Date.now() + REACH_OFFSET_MS;
  while (progress.appliedOffset < offset) {
    if (signal.aborted) throw signal.reason;
    if (Date.now() > deadline) throw new SyncProxyError('MASTER_TIMEOUT', `the replica did not reach log offset ${offset} within ${REACH_OFFSET_MS} ms (applied ${progress.appliedOffset})`);
    await sleep(5, signal);
  }
  if (progress.appliedOffset !== offset) throw new SyncProxyError('INTERNAL', `applied offset ${progress.appliedOffset} passed the held offset ${offset}`);
  return offset;
}
