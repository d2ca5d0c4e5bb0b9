/**
 * What a replica knows about its sync, and the texts built from it: the read gate, INFO
 * replication, ROLE, SYNCPROXY STATUS and the progress log line. Pure functions of the status
 * and the state machine, so every view tells the same story.
 */
import { SyncProxyError, describeError, oneLine } from '../errors';
import { AttemptHistory } from '../retry';
import type { ReplyValue } from '../resp/encode';
import type { ApplyProgress } from './applier';
import { CopyStats, emptyCopyStats } from './copier';
import type { LoadResult } from './loader';
import { NodeProfile, describeProfile } from '../backend/node-profile';
import type { ContentReport } from '../verify/verify-content';
import type { SyncState, SyncStateMachine } from './states';
import { formatBytes } from './util';

export interface ConfirmationProof {
  filesVerified: boolean;
  snapshotUnchanged: boolean;
  recordsApplied: boolean;
  countsMatched: boolean;
  /** The node's content after the load equals the snapshot's, key by key (src/verify). */
  contentMatched: boolean;
}

/** The last comparison of the node's content with the master's (after a load, or SYNCPROXY VERIFY). */
export type ContentCheck = ContentReport & { at: number; kind?: 'load' | 'online'; logOffset?: number; error?: string };

export interface ReplicaStatus {
  master: { host: string; port: number };
  maxAttempts: number;
  startedAtMs: number;
  attempt: number;
  history: AttemptHistory;
  masterRunId?: string;
  syncEndpoint?: string;
  snapshotId?: string;
  snapshotChanges: number;
  copy: CopyStats;
  loadBegun: boolean;
  loadBytesDone: number;
  loadBytesTotal: number;
  load?: LoadResult;
  proof: ConfirmationProof;
  /** What the replica node was found to do (node-profile.ts), once probed. */
  nodeProfile?: NodeProfile;
  /** The last content check after a load. */
  contentCheck?: ContentCheck;
  /** The last online verification (SYNCPROXY VERIFY or --verify-interval). */
  verify?: ContentCheck;
  apply?: ApplyProgress;
  masterOffset: number;
  confirmed: boolean;
  confirmedAtMs?: number;
  lastIoMs?: number;
  linkDownSinceMs?: number;
  retryAtMs?: number;
  lastError?: SyncProxyError;
  finalError?: SyncProxyError;
}

export function newReplicaStatus(host: string, port: number, maxAttempts: number): ReplicaStatus {
  return {
    master: { host, port }, maxAttempts, startedAtMs: Date.now(), attempt: 0, history: new AttemptHistory(),
    snapshotChanges: 0, copy: emptyCopyStats(), loadBegun: false, loadBytesDone: 0, loadBytesTotal: 0,
    proof: noProof(), masterOffset: 0, confirmed: false, linkDownSinceMs: Date.now(),
  };
}

function noProof(): ConfirmationProof {
  return { filesVerified: false, snapshotUnchanged: false, recordsApplied: false, countsMatched: false, contentMatched: false };
}

/** A new full sync proves everything again. */
export function resetForFullSync(status: ReplicaStatus): void {
  status.confirmed = false;
  status.confirmedAtMs = undefined;
  status.proof = noProof();
  status.load = undefined;
  status.apply = undefined;
  status.loadBytesDone = 0;
  status.loadBytesTotal = 0;
}

/** The freshest master offset: from the meta, a heartbeat or an entry. */
export function masterOffsetOf(status: ReplicaStatus): number {
  return Math.max(status.masterOffset, status.apply?.masterOffset ?? 0);
}

function lastIoOf(status: ReplicaStatus): number | undefined {
  const a = status.lastIoMs ?? 0;
  const b = status.apply?.lastIoMs ?? 0;
  return a === 0 && b === 0 ? undefined : Math.max(a, b);
}

function percent(done: number, total: number): number {
  return total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 0;
}

/** `copying 45% (12.3MB/27.1MB, files 3/6, attempt 2/5)` and the like for every state. */
export function progressText(state: SyncState, status: ReplicaStatus): string {
  const attempt = `attempt ${Math.max(1, status.attempt)}/${status.maxAttempts}`;
  const c = status.copy;
  switch (state) {
    case 'copying':
    case 'verifying':
      // The load runs during the copy (each verified file is loaded at once): shown once it began.
      return `${state} ${percent(c.bytesDone, c.bytesTotal)}% (${formatBytes(c.bytesDone)}/${formatBytes(c.bytesTotal)}, files ${c.filesDone}/${c.filesTotal}, ${status.loadBytesDone > 0 ? `loaded ${percent(status.loadBytesDone, status.loadBytesTotal)}%, ` : ''}${attempt})`;
    case 'loading':
      return `loading ${percent(status.loadBytesDone, status.loadBytesTotal)}% (${formatBytes(status.loadBytesDone)}/${formatBytes(status.loadBytesTotal)}, ${attempt})`;
    case 'catching_up': {
      const a = status.apply;
      return `catching_up (applied offset ${a?.appliedOffset ?? 0}, target ${a?.targetOffset ?? 'pending first heartbeat'}, ${attempt})`;
    }
    case 'backoff': {
      const wait = status.retryAtMs ? Math.max(0, status.retryAtMs - Date.now()) : 0;
      return `backoff (next attempt in ${(wait / 1000).toFixed(1)}s, ${attempt}, last error: ${status.lastError ? oneLine(describeError(status.lastError)) : 'none'})`;
    }
    default:
      return `${state} (${attempt})`;
  }
}

/**
 * null: reads allowed. Otherwise the RESP error text without '-'. Reads are allowed only after a
 * confirmed sync: while streaming, or with the link down when serve-stale-data is on.
 */
export function readGateText(machine: SyncStateMachine, status: ReplicaStatus, serveStaleData: boolean): string | null {
  const state = machine.state;
  if (state === 'failed') {
    const n = status.history.attempts;
    return oneLine(`MASTERDOWN full sync failed after ${n} attempt${n === 1 ? '' : 's'}: ${status.lastError ? describeError(status.lastError) : 'unknown error'}`);
  }
  if (status.confirmed) {
    if (state === 'streaming') return null;
    return serveStaleData ? null : "MASTERDOWN link with master is down and replica-serve-stale-data is set to 'no'";
  }
  return oneLine(`MASTERDOWN full sync not confirmed: ${progressText(state, status)}`);
}

export interface MasterView {
  logId: string;
  firstOffset: number;
  lastOffset: number;
  replicas: Array<{ runId: string; host: string; port: number; state: string; offset: number; lastSeenMs: number }>;
}

function syncFields(machine: SyncStateMachine, status: ReplicaStatus | undefined): string[] {
  return [
    `sync_state:${machine.state}`,
    `sync_confirmed:${status?.confirmed ? 1 : 0}`,
    // attempts started in this sync (1 while the first runs), and how many of them failed
    `sync_attempts:${status?.attempt ?? 0}`,
    `sync_failed_attempts:${status?.history.attempts ?? 0}`,
    `sync_snapshot_id:${status?.snapshotId ?? ''}`,
    `sync_snapshot_changes:${status?.snapshotChanges ?? 0}`,
    `sync_chunk_retries:${status?.copy.chunkRetries ?? 0}`,
    `last_sync_error:${status?.lastError ? oneLine(describeError(status.lastError)) : ''}`,
    ...verifyFields(status?.verify),
  ];
}

/** The last online verification: result ok | mismatch | error | none. */
export const VERIFY_RESULTS = ['ok', 'mismatch', 'error', 'none'] as const;

export function verifyResult(v: ContentCheck | undefined): (typeof VERIFY_RESULTS)[number] {
  return !v ? 'none' : v.error ? 'error' : v.differingKeys > 0 ? 'mismatch' : 'ok';
}

function verifyFields(v: ContentCheck | undefined): string[] {
  const result = verifyResult(v);
  return [
    `verify_last_result:${result}`,
    `verify_mismatched_keys:${v?.differingKeys ?? 0}`,
    `verify_last_at:${v ? Math.floor(v.at / 1000) : 0}`,
    `verify_log_offset:${v?.logOffset ?? 0}`,
    `verify_keys:${v?.keys ?? 0}`,
    `verify_last_error:${v?.error ? oneLine(v.error) : ''}`,
  ];
}

export function infoReplicationText(machine: SyncStateMachine, status: ReplicaStatus | undefined, master: MasterView): string {
  const lines = ['# Replication'];
  const now = Date.now();
  if (status) {
    const linkUp = machine.state === 'streaming';
    const inProgress = !status.confirmed && machine.state !== 'failed';
    const total = status.copy.bytesTotal;
    const read = status.copy.bytesDone;
    lines.push(
      'role:slave',
      `master_host:${status.master.host}`,
      `master_port:${status.master.port}`,
      `master_link_status:${linkUp ? 'up' : 'down'}`,
      `master_last_io_seconds_ago:${lastIoOf(status) === undefined ? -1 : Math.floor((now - lastIoOf(status)!) / 1000)}`,
      `master_sync_in_progress:${inProgress ? 1 : 0}`,
      `master_sync_total_bytes:${total}`,
      `master_sync_read_bytes:${read}`,
      `master_sync_left_bytes:${Math.max(0, total - read)}`,
      `master_sync_perc:${total > 0 ? ((read / total) * 100).toFixed(2) : '0.00'}`,
    );
    if (!linkUp) lines.push(`master_link_down_since_seconds:${status.linkDownSinceMs === undefined ? -1 : Math.floor((now - status.linkDownSinceMs) / 1000)}`);
    lines.push('slave_read_only:1', `slave_repl_offset:${status.apply?.appliedOffset ?? 0}`, `master_repl_offset:${masterOffsetOf(status)}`);
  } else {
    lines.push('role:master', `connected_slaves:${master.replicas.length}`);
    master.replicas.forEach((r, i) => {
      lines.push(`slave${i}:ip=${r.host},port=${r.port},state=${r.state},offset=${r.offset},lag=${Math.max(0, Math.floor((now - r.lastSeenMs) / 1000))}`);
    });
    lines.push(`master_replid:${master.logId}`, `master_repl_offset:${master.lastOffset}`, `repl_backlog_first_byte_offset:${master.firstOffset}`);
  }
  lines.push(...syncFields(machine, status));
  return lines.join('\r\n') + '\r\n';
}

/** Redis's ROLE reply. */
export function roleValue(machine: SyncStateMachine, status: ReplicaStatus | undefined, master: MasterView): ReplyValue {
  if (!status) return ['master', master.lastOffset, master.replicas.map((r) => [r.host, String(r.port), String(r.offset)])];
  const linkState: Record<SyncState, string> = {
    none: 'connect', backoff: 'connect', failed: 'connect', connecting: 'connecting', fetching_meta: 'sync', copying: 'sync',
    verifying: 'sync', loading: 'sync', catching_up: 'sync', streaming: 'connected',
  };
  return ['slave', status.master.host, status.master.port, linkState[machine.state], status.apply?.appliedOffset ?? 0];
}

/** SYNCPROXY STATUS as an object (also logged) ... */
export function statusObject(machine: SyncStateMachine, status: ReplicaStatus | undefined): Record<string, unknown> {
  const phases = machine.phases.map((p) => ({ state: p.state, reason: p.reason, startedAt: new Date(p.startedAtMs).toISOString(), endedAt: p.endedAtMs ? new Date(p.endedAtMs).toISOString() : null, durationMs: p.durationMs ?? Date.now() - p.startedAtMs }));
  if (!status) return { role: 'master', state: machine.state, phases };
  return {
    role: 'replica',
    state: machine.state,
    progress: progressText(machine.state, status),
    master: `${status.master.host}:${status.master.port}`,
    masterRunId: status.masterRunId ?? null,
    syncEndpoint: status.syncEndpoint ?? null,
    confirmed: status.confirmed,
    confirmedAt: status.confirmedAtMs ? new Date(status.confirmedAtMs).toISOString() : null,
    proof: { ...status.proof, caughtUp: status.confirmed },
    attempt: status.attempt,
    maxAttempts: status.maxAttempts,
    failedAttempts: status.history.attempts,
    snapshotId: status.snapshotId ?? null,
    snapshotChanges: status.snapshotChanges,
    bytesTotal: status.copy.bytesTotal,
    bytesRead: status.copy.bytesDone,
    bytesResumed: status.copy.resumedBytes,
    filesTotal: status.copy.filesTotal,
    filesDone: status.copy.filesDone,
    chunkRetries: status.copy.chunkRetries,
    loadBytes: status.loadBytesDone,
    load: status.load ?? null,
    nodeProfile: status.nodeProfile ? describeProfile(status.nodeProfile) : null,
    contentCheck: status.contentCheck ?? null,
    verify: status.verify ?? null,
    logId: status.apply?.logId ?? null,
    appliedOffset: status.apply?.appliedOffset ?? 0,
    masterOffset: masterOffsetOf(status),
    catchUpTarget: status.apply?.targetOffset ?? null,
    lastError: status.lastError ? describeError(status.lastError) : null,
    errors: status.history.records.map((r) => ({ attempt: r.attempt, at: new Date(r.at).toISOString(), code: r.error.code, retryable: r.error.retryable, chain: describeError(r.error) })),
    finalError: status.finalError ? describeError(status.finalError) : null,
    phases,
  };
}

/** The same as `key: value` lines for redis-cli. */
export function statusLines(machine: SyncStateMachine, status: ReplicaStatus | undefined): string {
  const obj = statusObject(machine, status);
  const lines: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (key === 'phases' || key === 'errors') continue;
    lines.push(`${key}: ${value !== null && typeof value === 'object' ? JSON.stringify(value) : String(value)}`);
  }
  for (const e of (obj.errors as Array<Record<string, unknown>> | undefined) ?? []) lines.push(`error[${e.attempt}]: ${e.at} ${oneLine(String(e.chain))}`);
  for (const p of obj.phases as Array<Record<string, unknown>>) lines.push(`phase: ${p.state} start=${p.startedAt} end=${p.endedAt ?? '-'} duration_ms=${p.durationMs} reason=${oneLine(String(p.reason))}`);
  return lines.join('\n');
}
