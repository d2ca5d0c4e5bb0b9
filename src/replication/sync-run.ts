/**
 * One replication run against one master: attempts of the full sync (handshake, meta, copy,
 * verify, load, catch-up) with backoff between them, then streaming; after a confirmed sync a
 * lost link resumes the log from the applied offset. Ends only when aborted (resolves) or when the
 * retry policy gives up (state `failed`, resolves). Never marks a sync confirmed it did not prove.
 */
import { promises as fsp } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { SyncProxyError, describeError } from '../errors';
import { AttemptHistory, RetryPolicy, sleep } from '../retry';
import { SNAPSHOT_FORMAT_VERSION } from '../source/types';
import { ApplyGate, followLog } from './applier';
import { OnlineReport, verifyOnline } from '../verify/online-verify';
import { CopiedSnapshot, copySnapshot } from './copier';
import { handshake } from './handshake';
import { SnapshotLoader } from './loader';
import { probeNodeProfile, withExpiryOverride } from '../backend/node-profile';
import { NodePipeline, probeVia } from './node-pipeline';
import { ReplicaStatus, resetForFullSync } from './replica-status';
import { ProgressStore, progressPath, stagingRoot, validateManifest } from './staging';
import type { SyncStateMachine } from './states';
import type { MetaAnswer, ReplicaIdentity, SyncClientFactory, SyncClientLike } from './sync-api';
import { Throttle } from './throttle';
import { digestNode, digestSnapshotFiles } from '../verify/dataset-readers';
import { compareContent, describeDifferences } from '../verify/verify-content';
import { raceAbort } from './util';
import { OverlappedLoad } from './overlapped-load';

/** Refetches of one chunk before the attempt fails. */
const CHUNK_FETCH_ATTEMPTS = 4;
/** Bytes the loader keeps unanswered on the node while it shares the process with the copy. */
const OVERLAPPED_LOAD_IN_FLIGHT_BYTES = 2 * 1024 * 1024;
/** Bytes per read of a snapshot file by that loader. */
const OVERLAPPED_LOAD_READ_BYTES = 256 * 1024;
/** Pause between GetMeta calls while the master builds its snapshot. */
const META_POLL_PAUSE_MS = 500;

export interface SyncRunDeps {
  config: Readonly<Config>;
  logger: Logger;
  machine: SyncStateMachine;
  status: ReplicaStatus;
  replica: ReplicaIdentity;
  ownRunId: string;
  createClient: SyncClientFactory;
  signal: AbortSignal;
}

export class SyncRun {
  /** While following the log: what online verification needs. */
  private following?: { client: SyncClientLike; gate: ApplyGate; databases: number };
  private verifying?: Promise<OnlineReport>;
  private readonly policy: RetryPolicy;
  private readonly chunkRetry: RetryPolicy;
  private readonly throttle: Throttle;

  constructor(private readonly deps: SyncRunDeps) {
    const s = deps.config.sync;
    this.policy = new RetryPolicy({ maxAttempts: s.maxAttempts, baseDelayMs: s.retryBaseMs, maxDelayMs: s.retryMaxDelayMs, maxTotalMs: s.maxTotalMs });
    this.chunkRetry = new RetryPolicy({ maxAttempts: CHUNK_FETCH_ATTEMPTS, baseDelayMs: Math.min(200, s.retryBaseMs), maxDelayMs: s.retryMaxDelayMs, maxTotalMs: s.maxTotalMs });
    this.throttle = new Throttle(s.throttle);
  }

  async run(): Promise<void> {
    const { machine, status, signal, logger } = this.deps;
    for (;;) {
      if (signal.aborted) return;
      const wasConfirmed = status.confirmed;
      try {
        await this.attempt(status.history.attempts + 1);
      } catch (error) {
        if (signal.aborted) return;
        if (wasConfirmed && !status.confirmed) {
          // The confirmed dataset is no longer in step (log trimmed, node failure): a new full
          // sync with a fresh attempt budget, reads gated again.
          status.history = new AttemptHistory();
        }
        // status.history is replaced by the applier once caught up, so read it after the attempt.
        const history = status.history;
        const err = history.record(error);
        status.lastError = err;
        status.linkDownSinceMs ??= Date.now();
        logger.warn({ code: err.code, attempt: history.attempts, confirmed: status.confirmed }, `replication attempt failed: ${describeError(err)}`);
        if (!this.policy.shouldRetry(history)) {
          status.finalError = history.finalError(status.confirmed ? 'replication link' : 'full sync');
          machine.transition('failed', describeError(status.finalError));
          return;
        }
        const delay = this.policy.delayFor(history.attempts + 1);
        status.retryAtMs = Date.now() + delay;
        machine.transition('backoff', `${err.code}; attempt ${history.attempts + 1}/${this.policy.options.maxAttempts} in ${delay} ms`);
        try {
          await sleep(delay, signal);
        } catch {
          return;
        }
      }
    }
  }

  /** One attempt; only ever throws (a streaming replica stays inside until the link fails). */
  private async attempt(attempt: number): Promise<never> {
    const { machine, status, config, signal, logger } = this.deps;
    status.attempt = attempt;
    machine.transition('connecting', `attempt ${attempt}/${config.sync.maxAttempts} to ${status.master.host}:${status.master.port}`);
    const hello = await handshake({ host: status.master.host, port: status.master.port, password: config.masterauth, ownRunId: this.deps.ownRunId, timeoutMs: config.sync.rpcTimeoutMs, signal });
    status.masterRunId = hello.runId;
    status.syncEndpoint = `${hello.syncHost}:${hello.syncPort}`;
    status.lastIoMs = Date.now();
    const client = this.deps.createClient({
      host: hello.syncHost,
      port: hello.syncPort,
      password: config.masterauth,
      tls: config.tls.ca || config.tls.cert ? { ...config.tls } : undefined,
      rpcTimeoutMs: config.sync.rpcTimeoutMs,
      logger,
    });
    try {
      if (status.confirmed && status.apply) {
        machine.transition('catching_up', `link restored: resuming the write log at offset ${status.apply.appliedOffset + 1}`);
        return await this.follow(client);
      }
      return await this.fullSync(client);
    } finally {
      await Promise.resolve(client.close()).catch(() => undefined);
    }
  }

  /**
   * The copy overlaps the master's build: GetMeta accepts a partial manifest (the files the
   * master has finished so far) and the copier asks for more while it copies, until the manifest
   * is complete; every later manifest must extend the earlier one (same snapshot, same files).
   * Copy and load overlap: file i (manifest order) is loaded as soon as the copier has verified it
   * (size, whole-file CRC32C) while later files are still being copied; the state stays `copying`
   * until every file is copied, goes through `verifying`, and is `loading` for the files still to
   * load and the count verification. Confirmation still needs every proof (applier.ts); reads are
   * gated throughout. The loader keeps its node connections (load lanes) for the attempt, and the
   * FLUSHALL that begins each snapshot's load (also after a snapshot change) waits until every
   * lane has everything an earlier snapshot's load sent answered.
   */
  private async fullSync(client: SyncClientLike): Promise<never> {
    const { machine, status, config, signal, logger } = this.deps;
    // An earlier attempt that got a meta and did not confirm was copying this snapshot id.
    const interruptedCopyOf = status.confirmed ? undefined : status.snapshotId;
    resetForFullSync(status);
    let changes = 0;
    let meta: MetaAnswer;
    let copied: CopiedSnapshot<MetaAnswer>;
    let loader: SnapshotLoader | undefined;
    let loading: OverlappedLoad | undefined;
    try {
      for (;;) {
        machine.transition('fetching_meta', changes === 0 ? 'handshake done' : `snapshot changed (${changes} in this attempt)`);
        meta = await this.fetchMeta(client, 0);
        if (meta.formatVersion !== SNAPSHOT_FORMAT_VERSION) throw new SyncProxyError('PROTOCOL_VERSION_MISMATCH', `master snapshot format ${meta.formatVersion}, this proxy loads ${SNAPSHOT_FORMAT_VERSION}`);
        validateManifest(meta, stagingRoot(config.dataDir));
        if (changes === 0 && interruptedCopyOf !== undefined && interruptedCopyOf !== meta.snapshotId) {
          // The copy was cut by a lost link (a restarted master) rather than SNAPSHOT_CHANGED: the
          // snapshot was replaced all the same, so it counts as a change.
          status.snapshotChanges++;
          logger.warn({ was: interruptedCopyOf, now: meta.snapshotId }, 'the snapshot changed between attempts');
        }
        status.snapshotId = meta.snapshotId;
        // Offsets count within one write log: a new snapshot may come from a new log (restarted master).
        status.masterOffset = meta.masterOffset;
        status.loadBytesDone = 0;
        status.loadBytesTotal = meta.totalBytes;
        machine.transition('copying', `snapshot ${meta.snapshotId}: ${meta.files.length} files, ${meta.totalBytes} bytes${meta.partial ? ' finished so far (the master is still building)' : ''}, log offset ${meta.logOffset}`);
        // Fewer bytes in flight than a lone load: the copy's chunks share the memory (invariant 6).
        loader ??= await SnapshotLoader.connect({
          node: this.nodeAddress(), logger, signal, maxInFlightBytes: OVERLAPPED_LOAD_IN_FLIGHT_BYTES, readBytes: OVERLAPPED_LOAD_READ_BYTES,
          expiry: config.nodeExpiry, connections: config.loadConnections,
        });
        loading = new OverlappedLoad(loader, meta, status, signal);
        const copyAbort = new AbortController();
        const onAbort = (): void => copyAbort.abort(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        // A load failure stops the copy at once; it is the error the attempt reports.
        loading.onFailure = (err) => copyAbort.abort(err);
        try {
          const current = loading;
          const copyingId = meta.snapshotId;
          copied = await copySnapshot({
            client, manifest: meta, masterRunId: status.masterRunId ?? '', dataDir: config.dataDir, workers: config.sync.workers,
            chunkSize: config.sync.chunkSize, throttle: this.throttle, chunkRetry: this.chunkRetry, replica: this.deps.replica,
            logger, signal: copyAbort.signal, stats: status.copy, onFileVerified: (index, path) => current.fileVerified(index, path),
            nextManifest: (knownFiles) => this.fetchMeta(client, knownFiles, copyingId),
            onManifest: (next) => {
              status.loadBytesTotal = next.totalBytes;
              current.extend(next);
            },
          });
          // The copier returns only once the manifest is complete.
          meta = copied.manifest;
          status.masterOffset = meta.masterOffset;
          machine.transition('verifying', `${copied.files.length} files copied`);
          await verifyCopied(copied);
          break;
        } catch (err) {
          await loading.stop();
          if (loading.failure !== undefined) throw loading.failure;
          if (!(err instanceof SyncProxyError) || err.code !== 'SNAPSHOT_CHANGED' || signal.aborted) throw err;
          changes++;
          status.snapshotChanges++;
          logger.warn({ snapshotId: meta.snapshotId, changes }, `snapshot changed during the copy: ${err.message}`);
          if (changes > config.sync.maxAttempts) throw new SyncProxyError('SNAPSHOT_CHANGED', `the snapshot changed ${changes} times in one attempt`, { cause: err });
          // Nothing of the old snapshot stays on the node (the next load's FLUSHALL would also remove it).
          if (loader.snapshotId !== undefined) await loader.discard();
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
      }
      // Every file of the snapshot about to be loaded came from that one snapshot id.
      status.proof.filesVerified = copied.files.length === meta.files.length && copied.snapshotId === meta.snapshotId;
      status.proof.snapshotUnchanged = copied.snapshotId === meta.snapshotId;

      machine.transition('loading', `loading snapshot ${meta.snapshotId} into the node (${loading.filesLoaded}/${meta.files.length} files loaded during the copy)`);
      await loading.done();
      loader.extend(meta);
      const load = await loader.finish();
      status.load = load;
      status.nodeProfile = load.profile;
      status.proof.recordsApplied = true;
      status.proof.countsMatched = load.dbs.length === meta.dbs.length;
      // Counts can be fooled (a lost key with a TTL fits them): compare the content itself.
      const files = copied.files.map((f) => ({ name: f.name, path: f.path }));
      const report = await compareContent(
        (digest, onlyRanges) => digestSnapshotFiles(files, digest, signal).then(() => void onlyRanges),
        (digest, onlyRanges) => digestNode(this.nodeAddress(), allDbs(load.profile.databases), digest, logger, signal, onlyRanges),
      );
      status.contentCheck = { ...report, at: Date.now() };
      if (report.differingKeys > 0) throw new SyncProxyError('VERIFY_MISMATCH', `the node's content after the load differs from snapshot ${meta.snapshotId}: ${describeDifferences(report)}`, { details: { differences: report.differences } });
      status.proof.contentMatched = true;
      logger.info({ keys: report.keys, differingRanges: report.differingRanges, durationMs: report.durationMs }, 'node content verified against the snapshot');
      status.apply = { logId: meta.logId, appliedOffset: meta.logOffset, sentOffset: meta.logOffset, masterOffset: meta.masterOffset, lastIoMs: Date.now(), entriesApplied: 0 };
      loader.close();
      loader = undefined;
      machine.transition('catching_up', `loaded ${load.commands} commands; applying the write log from offset ${meta.logOffset + 1}`);
    } finally {
      // Never leave a load running behind the attempt (SLAVEOF NO ONE flushes after the run ends).
      await loading?.stop();
      loader?.close();
    }
    return this.follow(client);
  }

  /**
   * GetMeta, waiting (within sync-snapshot-wait-ms) while the master builds the snapshot: the
   * complete manifest, or a partial one with more than `knownFiles` files.
   */
  private async fetchMeta(client: SyncClientLike, knownFiles: number, snapshotId?: string): Promise<MetaAnswer> {
    const { config, signal, logger, status } = this.deps;
    const deadline = Date.now() + config.sync.snapshotWaitMs;
    for (;;) {
      try {
        const meta = await raceAbort(client.getMeta({ waitMs: Math.max(0, deadline - Date.now()), replica: this.deps.replica, knownFiles, snapshotId }), signal);
        status.lastIoMs = Date.now();
        return meta;
      } catch (err) {
        if (signal.aborted || !(err instanceof SyncProxyError) || err.code !== 'SNAPSHOT_BUILDING' || Date.now() >= deadline) throw err;
        status.lastIoMs = Date.now();
        logger.info({ details: err.details }, 'master is still building the snapshot; waiting');
        await sleep(META_POLL_PAUSE_MS, signal);
      }
    }
  }

  private async follow(client: SyncClientLike): Promise<never> {
    const { status, signal, logger, machine } = this.deps;
    const apply = status.apply!;
    const node = await NodePipeline.connect(this.nodeAddress(), signal);
    try {
      // Learned again on every link: the node may have been replaced since the load.
      const profile = withExpiryOverride(await probeNodeProfile(probeVia(node)), this.deps.config.nodeExpiry);
      status.nodeProfile = profile;
      const gate = new ApplyGate();
      this.following = { client, gate, databases: profile.databases };
      return await followLog({
        client, node, replica: this.deps.replica, progress: apply, logger, signal, profile, gate,
        onCaughtUp: () => {
          status.lastIoMs = apply.lastIoMs;
          const firstConfirmation = !status.confirmed;
          if (firstConfirmation) {
            const missing = Object.entries(status.proof).filter(([, ok]) => !ok).map(([name]) => name);
            if (missing.length > 0) throw new SyncProxyError('INTERNAL', `caught up without proof of: ${missing.join(', ')}`);
            status.confirmed = true;
            status.confirmedAtMs = Date.now();
            void this.cleanStaging();
          }
          status.linkDownSinceMs = undefined;
          status.history = new AttemptHistory();
          machine.transition('streaming', `${firstConfirmation ? 'full sync confirmed' : 'link restored'}: applied offset ${apply.appliedOffset} >= master offset ${apply.targetOffset} reported after the snapshot`);
        },
      });
    } catch (err) {
      // A node failure while applying leaves the node's state unknown: only a full sync fixes it.
      if (err instanceof SyncProxyError && ['APPLY_FAILED', 'BACKEND_CONNECTION_LOST', 'BACKEND_UNAVAILABLE', 'LOG_OFFSET_GONE'].includes(err.code)) status.confirmed = false;
      throw err;
    } finally {
      this.following?.gate.release();
      this.following = undefined;
      node.close();
    }
  }

  /**
   * SYNCPROXY VERIFY: compares the node with the master at one log offset (online-verify.ts). Only
   * on a confirmed, streaming replica; one at a time (a second caller shares the running one).
   */
  verifyOnline(): Promise<OnlineReport> {
    const { status, machine, config, logger, signal } = this.deps;
    const following = this.following;
    if (!following || !status.confirmed || machine.state !== 'streaming' || !status.apply) {
      return Promise.reject(new SyncProxyError('INVALID_REQUEST', `online verification needs a confirmed, streaming replica (state ${machine.state})`));
    }
    this.verifying ??= verifyOnline({
      client: following.client, replica: this.deps.replica, progress: status.apply, gate: following.gate, node: this.nodeAddress(),
      databases: following.databases, snapshotWaitMs: config.sync.snapshotWaitMs, logger, signal,
    }).finally(() => (this.verifying = undefined));
    return this.verifying;
  }

  private nodeAddress(): { host: string; port: number; password?: string; keepAliveMs: number } {
    const { config } = this.deps;
    return { host: config.backend.host, port: config.backend.port, password: config.backendPassword, keepAliveMs: config.nodeKeepAliveMs };
  }

  /** After confirmation the staging copy is not needed any more. */
  private async cleanStaging(): Promise<void> {
    const { config, logger } = this.deps;
    try {
      await new ProgressStore(progressPath(config.dataDir)).remove();
      await fsp.rm(stagingRoot(config.dataDir), { recursive: true, force: true });
    } catch (err) {
      logger.warn({ err: String(err) }, 'could not remove the staging directory after the confirmed sync');
    }
  }
}

function allDbs(count: number): number[] {
  return Array.from({ length: Math.max(1, count) }, (_, i) => i);
}

/** The verifying phase: every manifest file is in place with its size (its CRC was checked from disk by the copier). */
async function verifyCopied(copied: CopiedSnapshot): Promise<void> {
  for (const file of copied.files) {
    const stat = await fsp.stat(file.path).catch(() => undefined);
    if (!stat) throw new SyncProxyError('SIZE_MISMATCH', `${file.name} is missing after the copy`);
    if (stat.size !== file.size) throw new SyncProxyError('SIZE_MISMATCH', `${file.name} is ${stat.size} bytes, the manifest says ${file.size}`);
  }
}
