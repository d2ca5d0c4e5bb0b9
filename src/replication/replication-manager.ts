/**
 * What the server calls for SLAVEOF/REPLICAOF, ROLE, INFO replication, SYNCPROXY STATUS and the
 * read gate. Owns the replica state machine and at most one SyncRun; a new master or SLAVEOF NO
 * ONE aborts the run (AbortController through every phase) and waits for it before going on.
 * `<dataDir>/replica/role.json` remembers the master so a restarted process resumes the sync.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { writeFileSynced } from '../durable-fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { RetryPolicy } from '../retry';
import type { ReplyValue } from '../resp/encode';
import { SyncClient } from '../sync/sync-client';
import { CLOSE_DRAIN_MS, FLUSH_REPLY_TIMEOUT_MS, NodePipeline, callWithin } from './node-pipeline';
import { expectOk } from './node-replies';
import { MasterView, ReplicaStatus, infoReplicationText, newReplicaStatus, progressText, readGateText, roleValue, statusLines, statusObject } from './replica-status';
import { replicaDir } from './staging';
import { SyncState, SyncStateMachine } from './states';
import type { SyncClientFactory } from './sync-api';
import { SyncRun } from './sync-run';
import { abortError } from './util';
import type { OnlineReport } from '../verify/online-verify';
import { describeDifferences } from '../verify/verify-content';

export type Role = 'master' | 'replica';

export interface ReplicationManagerOptions {
  config: Readonly<Config>;
  logger: Logger;
  /** This proxy's run id. */
  runId: string;
  /** This proxy's RESP address. */
  self: { host: string; port: number };
  /** Tests may inject another sync client; the default is the gRPC SyncClient. */
  createSyncClient?: SyncClientFactory;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '0.0.0.0', '::']);

export class ReplicationManager {
  private readonly machine: SyncStateMachine;
  private readonly logger: Logger;
  private readonly roleListeners: Array<(role: Role) => void> = [];
  private replicaStatus?: ReplicaStatus;
  private run?: { abort: AbortController; done: Promise<void>; syncRun: SyncRun };
  private verifyTimer?: NodeJS.Timeout;
  private progressTimer?: NodeJS.Timeout;
  /** Serialises SLAVEOF / NO ONE / stop so two operators cannot interleave aborts and starts. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ReplicationManagerOptions) {
    this.logger = options.logger;
    this.machine = new SyncStateMachine(options.logger);
    // A restarted replica is a replica from its first client on: the proxy accepts connections
    // before start() runs, and answering them as a master meanwhile would serve unconfirmed data
    // (and take writes). start() then resumes the sync and announces the role.
    const saved = readRoleFileSync(this.roleFile);
    if (saved) this.replicaStatus = newReplicaStatus(saved.host, saved.port, options.config.sync.maxAttempts);
  }

  get role(): Role {
    return this.replicaStatus ? 'replica' : 'master';
  }

  get state(): string {
    return this.machine.state;
  }

  /** The state and status INFO replication and SYNCPROXY STATUS are made from, for /metrics. */
  metricsView(): { state: SyncState; status: Readonly<ReplicaStatus> | undefined } {
    return { state: this.machine.state, status: this.replicaStatus };
  }

  private get roleFile(): string {
    return path.join(replicaDir(this.options.config.dataDir), 'role.json');
  }

  /** Resumes the sync recorded in role.json (the copy continues from progress.json). */
  async start(): Promise<void> {
    let saved: { host?: unknown; port?: unknown } | undefined;
    try {
      saved = JSON.parse(await fsp.readFile(this.roleFile, 'utf8')) as { host?: unknown; port?: unknown };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.logger.warn({ err: String(err) }, `ignoring unreadable ${this.roleFile}`);
      return;
    }
    if (typeof saved?.host !== 'string' || typeof saved.port !== 'number') throw new SyncProxyError('CONFIG_INVALID', `${this.roleFile} does not hold {host, port}`);
    this.logger.info({ master: `${saved.host}:${saved.port}` }, 'resuming replication recorded before the restart');
    if (this.replicaStatus) this.emitRole('replica'); // restored by the constructor: slaveof sees no role change
    await this.slaveof(saved.host, saved.port, true);
  }

  async stop(): Promise<void> {
    await this.serial(() => this.abortRun('proxy stopping', false));
  }

  slaveof(host: string, port: number, force: boolean): Promise<'started' | 'already'> {
    if (port === this.options.self.port && (LOOPBACK.has(host.toLowerCase()) || host === this.options.self.host)) {
      return Promise.reject(new SyncProxyError('SELF_REPLICATION', `${host}:${port} is this proxy's own address`));
    }
    return this.serial(async () => {
      const current = this.replicaStatus;
      if (current && !force && current.master.host === host && current.master.port === port && this.machine.state !== 'failed') return 'already' as const;
      await this.abortRun(current ? `SLAVEOF ${host}:${port} replaces ${current.master.host}:${current.master.port}` : `SLAVEOF ${host}:${port}`, true);
      await this.writeRoleFile(host, port);
      const wasMaster = !current;
      this.replicaStatus = newReplicaStatus(host, port, this.options.config.sync.maxAttempts);
      if (wasMaster) this.emitRole('replica');
      this.launch(this.replicaStatus);
      return 'started' as const;
    });
  }

  /**
   * The node's data may no longer be what the confirmed sync left (a DEBUG RELOAD whose load
   * failed): a new full sync from the same master, as `SLAVEOF host port force` (reads are refused
   * until it is confirmed). Nothing to do on a master.
   */
  async resync(reason: string): Promise<void> {
    const status = this.replicaStatus;
    if (!status) return;
    this.logger.warn({ reason }, 'the node changed under the replica: full sync again');
    await this.slaveof(status.master.host, status.master.port, true);
  }

  /**
   * SLAVEOF NO ONE: abort, forget the master, and never leave a partial load behind. The flush
   * comes before the role changes: when the node cannot be flushed, the proxy stays an unconfirmed
   * replica (reads refused, last_sync_error says why), the command answers the error, and a
   * second SLAVEOF NO ONE tries again.
   */
  noOne(): Promise<void> {
    return this.serial(async () => {
      const status = this.replicaStatus;
      if (!status) return;
      await this.abortRun('SLAVEOF NO ONE', true);
      if (status.loadBegun && !status.confirmed) {
        try {
          await this.flushPartialLoad();
        } catch (err) {
          status.lastError = toSyncProxyError(err, 'BACKEND_UNAVAILABLE', 'FLUSHALL of the partly loaded node');
          throw status.lastError;
        }
      }
      this.replicaStatus = undefined;
      await fsp.rm(this.roleFile, { force: true });
      this.emitRole('master');
    });
  }

  onRoleChange(listener: (role: Role) => void): void {
    this.roleListeners.push(listener);
  }

  readGate(): string | null {
    if (!this.replicaStatus) return null;
    return readGateText(this.machine, this.replicaStatus, this.options.config.sync.serveStaleData);
  }

  infoReplication(master: MasterView): string {
    return infoReplicationText(this.machine, this.replicaStatus, master);
  }

  roleReply(master: MasterView): ReplyValue {
    return roleValue(this.machine, this.replicaStatus, master);
  }

  status(): object {
    return statusObject(this.machine, this.replicaStatus);
  }

  statusText(): string {
    return statusLines(this.machine, this.replicaStatus);
  }

  private launch(status: ReplicaStatus): void {
    const { config, runId, self } = this.options;
    const abort = new AbortController();
    const createClient: SyncClientFactory = this.options.createSyncClient ?? ((o) => new SyncClient({ ...o, tls: o.tls && (o.tls.ca || o.tls.cert) ? o.tls : undefined }));
    const syncRun = new SyncRun({
      config, logger: this.logger, machine: this.machine, status, replica: { runId, host: self.host, port: self.port },
      ownRunId: runId, createClient, signal: abort.signal,
    });
    const done = syncRun.run().catch((err) => {
      // run() handles its own errors; reaching this is a bug, shown as failed rather than hidden.
      const e = toSyncProxyError(err, 'INTERNAL', 'replication run');
      status.lastError = e;
      status.finalError = e;
      this.logger.error({ err: e.describe() }, 'replication run crashed');
      if (this.machine.canTransition('failed')) this.machine.transition('failed', e.describe());
    });
    this.run = { abort, done, syncRun };
    this.progressTimer = setInterval(() => this.logProgress(status), config.sync.progressIntervalMs);
    this.progressTimer.unref();
    if (config.verifyIntervalMs > 0) {
      this.verifyTimer = setInterval(() => {
        if (this.machine.state === 'streaming' && status.confirmed) this.verify().catch(() => undefined);
      }, config.verifyIntervalMs);
      this.verifyTimer.unref();
    }
  }

  /**
   * SYNCPROXY VERIFY (and --verify-interval-ms): compares the replica node with the master at one
   * log offset. The result, or why it could not run, goes to the status and INFO.
   */
  async verify(): Promise<OnlineReport> {
    const status = this.replicaStatus;
    const run = this.run;
    if (!status || !run) throw new SyncProxyError('INVALID_REQUEST', 'SYNCPROXY VERIFY runs on a replica (this proxy is a master)');
    try {
      const report = await run.syncRun.verifyOnline();
      status.verify = { ...report, at: Date.now(), kind: 'online' };
      const level = report.differingKeys > 0 ? 'warn' : 'info';
      this.logger[level]({ keys: report.keys, differingKeys: report.differingKeys, logOffset: report.logOffset, durationMs: report.durationMs }, report.differingKeys > 0 ? `online verification: ${describeDifferences(report)}` : 'online verification: the node equals the master');
      return report;
    } catch (err) {
      const e = toSyncProxyError(err, 'INTERNAL', 'online verification');
      if (e.code !== 'INVALID_REQUEST') status.verify = { keys: 0, ranges: 0, differingRanges: 0, differingKeys: 0, differences: [], durationMs: 0, at: Date.now(), kind: 'online', error: e.describe() };
      throw e;
    }
  }

  private logProgress(status: ReplicaStatus): void {
    const state = this.machine.state;
    if (state === 'none' || state === 'failed' || (state === 'streaming' && status.confirmed)) return;
    this.logger.info(
      { state, bytesRead: status.copy.bytesDone, bytesTotal: status.copy.bytesTotal, filesDone: status.copy.filesDone, filesTotal: status.copy.filesTotal, attempt: status.attempt, appliedOffset: status.apply?.appliedOffset },
      `sync progress: ${progressText(state, status)}`,
    );
  }

  /** Aborts the running sync, waits for it to unwind, and (when asked) goes to state none. */
  private async abortRun(reason: string, toNone: boolean): Promise<void> {
    const run = this.run;
    this.run = undefined;
    if (this.progressTimer) clearInterval(this.progressTimer);
    this.progressTimer = undefined;
    if (this.verifyTimer) clearInterval(this.verifyTimer);
    this.verifyTimer = undefined;
    if (run) {
      run.abort.abort(abortError(reason));
      await run.done;
      // The next FLUSHALL (a new sync's, or a partial load's) must not meet a write of this run.
      if (!(await NodePipeline.settled(CLOSE_DRAIN_MS))) this.logger.warn({ waitedMs: CLOSE_DRAIN_MS }, 'the node did not answer every command of the aborted sync in time');
    }
    if (toNone && this.machine.state !== 'none') this.machine.transition('none', reason);
  }

  private async flushPartialLoad(): Promise<void> {
    const { config } = this.options;
    const address = { host: config.backend.host, port: config.backend.port, password: config.backendPassword };
    const policy = new RetryPolicy({ maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000, maxTotalMs: 3 * FLUSH_REPLY_TIMEOUT_MS });
    await policy.run('FLUSHALL of a partially loaded node', async () => expectOk(await callWithin(address, ['FLUSHALL'], FLUSH_REPLY_TIMEOUT_MS), 'FLUSHALL', 'BACKEND_ERROR_REPLY'));
    this.logger.warn('SLAVEOF NO ONE during an unconfirmed load: the node was flushed so no partial data is served');
  }

  private async writeRoleFile(host: string, port: number): Promise<void> {
    const file = this.roleFile;
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true });
      await writeFileSynced(`${file}.tmp`, JSON.stringify({ host, port }));
      await fsp.rename(`${file}.tmp`, file);
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', `writing ${file}`);
    }
  }

  private emitRole(role: Role): void {
    for (const listener of this.roleListeners) {
      try {
        listener(role);
      } catch (err) {
        this.logger.error({ err: String(err), role }, 'role change listener failed');
      }
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** role.json read synchronously (once, at construction); anything unreadable is left to start(). */
function readRoleFileSync(file: string): { host: string; port: number } | undefined {
  try {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { host?: unknown; port?: unknown };
    return typeof saved?.host === 'string' && typeof saved.port === 'number' ? { host: saved.host, port: saved.port } : undefined;
  } catch {
    return undefined;
  }
}
