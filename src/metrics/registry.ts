/**
 * The proxy's Prometheus metrics, on a Registry of its own (never prom-client's global one: two
 * proxies in one process, as in tests, must not share or clash).
 *
 * Every value is read at scrape time, in a `collect()`, from the objects INFO, ROLE and SYNCPROXY
 * STATUS read (ProxyStats, NodeConnection, WriteLog, SnapshotStore, the replica's ReplicaStatus,
 * the sync server's replica list): there is no second bookkeeping that could disagree with INFO.
 * Totals INFO shows are Counters whose collect sets them (reset, then inc by the total); a total
 * that belongs to one SLAVEOF (sync failures, chunk retries, snapshot changes) starts again at 0
 * with a new SLAVEOF, which rate() reads as a counter reset.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProxyStats, ReplicaInfo } from '../server/context';
import type { BuildTotals } from '../source/snapshot-store';
import type { ReplicaStatus } from '../replication/replica-status';
import { VERIFY_RESULTS, masterOffsetOf, verifyResult } from '../replication/replica-status';
import { SYNC_STATES, SyncState } from '../replication/states';
import { CommandDurationHistogram, CommandTiming } from './command-timing';

const PREFIX = 'pika_sync_proxy_';

/**
 * prom-client's default Node.js gauges whose names end in `_total` (active handles, requests,
 * resources): Prometheus reserves that suffix for counters and `promtool check metrics` says so.
 * They are left out; the process and heap metrics stay.
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** What the metrics read; proxy.ts hands in the live objects. */
export interface MetricsSources {
  version: string;
  runId: string;
  role(): 'master' | 'replica';
  node: { readonly isUp: boolean; readonly reconnects: number };
  stats: Readonly<ProxyStats>;
  connectedClients(): number;
  log: { readonly firstOffset: number; readonly lastOffset: number; readonly bytes: number; readonly segmentCount: number };
  logMaxBytes: number;
  snapshotBuilds(): Readonly<BuildTotals>;
  replica(): { state: SyncState; status: Readonly<ReplicaStatus> | undefined };
  replicas(): ReplicaInfo[];
}

/** A Counter whose value is a total kept elsewhere, set at each scrape. */
function totalCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name: PREFIX + name, help, registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

function gauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({ name: PREFIX + name, help, registers: [registry], collect() { this.set(read()); } });
}

export function createRegistry(src: MetricsSources, timing: CommandTiming): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(PREFIX + name);

  new Gauge({
    name: `${PREFIX}info`, help: 'Always 1; the proxy version and this process run id as labels', labelNames: ['version', 'run_id'], registers: [registry],
    collect() { this.set({ version: src.version, run_id: src.runId }, 1); },
  });
  new Gauge({
    name: `${PREFIX}role`, help: 'The proxy role: 1 for the current one (master or replica), 0 for the other', labelNames: ['role'], registers: [registry],
    collect() {
      const role = src.role();
      for (const r of ['master', 'replica']) this.set({ role: r }, r === role ? 1 : 0);
    },
  });

  // The node behind the proxy (INFO proxy: backend_link_status).
  gauge(registry, 'node_link_up', '1 while the ordered connection to the node is up', () => (src.node.isUp ? 1 : 0));
  totalCounter(registry, 'node_reconnects_total', 'Times the node connection came up again after a drop or a failed first connect', () => src.node.reconnects);

  // Clients (INFO proxy).
  gauge(registry, 'connected_clients', 'Client connections open now', src.connectedClients);
  totalCounter(registry, 'connections_received_total', 'Client connections accepted (INFO total_connections_received)', () => src.stats.connectionsReceived);
  totalCounter(registry, 'rejected_connections_total', 'Client connections refused at --max-clients (INFO rejected_connections)', () => src.stats.rejectedConnections);
  totalCounter(registry, 'commands_processed_total', 'Client commands run (INFO total_commands_processed)', () => src.stats.commandsProcessed);
  totalCounter(registry, 'protocol_errors_total', 'Client connections closed for a RESP protocol error (INFO protocol_errors)', () => src.stats.protocolErrors);
  totalCounter(registry, 'output_limit_disconnections_total', 'Clients cut off at --client-output-limit (INFO client_output_limit_disconnections)', () => src.stats.outputLimitDisconnects);
  new CommandDurationHistogram(timing, registry);

  // The write log (INFO proxy: write_log_*).
  gauge(registry, 'write_log_first_offset', 'Oldest offset the write log still holds', () => src.log.firstOffset);
  gauge(registry, 'write_log_last_offset', 'Newest offset in the write log (INFO master_repl_offset on a master)', () => src.log.lastOffset);
  gauge(registry, 'write_log_bytes', 'Bytes of the write log on disk', () => src.log.bytes);
  gauge(registry, 'write_log_max_bytes', 'Bytes the write log may keep (--write-log-max-bytes)', () => src.logMaxBytes);
  gauge(registry, 'write_log_segments', 'Segment files of the write log on disk', () => src.log.segmentCount);

  // Snapshot builds on this proxy (INFO proxy: snapshot_builds, snapshot_last_build).
  totalCounter(registry, 'snapshot_builds_total', 'Snapshot builds finished since the start', () => src.snapshotBuilds().builds);
  totalCounter(registry, 'snapshot_build_failures_total', 'Snapshot builds that failed since the start', () => src.snapshotBuilds().failures);
  gauge(registry, 'snapshot_last_build_duration_seconds', 'Wall time of the last finished snapshot build (0 before the first)', () => (src.snapshotBuilds().last?.durationMs ?? 0) / 1000);
  gauge(registry, 'snapshot_last_build_bytes', 'Bytes of the files of the last finished snapshot build', () => src.snapshotBuilds().last?.bytes ?? 0);
  gauge(registry, 'snapshot_last_build_keys', 'Keys in the last finished snapshot build', () => src.snapshotBuilds().last?.keys ?? 0);

  addReplicaMetrics(registry, src);
  addMasterMetrics(registry, src);
  return registry;
}

/** The replica's sync (INFO replication, SYNCPROXY STATUS); on a master: state none, zeros. */
function addReplicaMetrics(registry: Registry, src: MetricsSources): void {
  const status = (): Readonly<ReplicaStatus> | undefined => src.replica().status;
  new Gauge({
    name: `${PREFIX}replica_sync_state`, help: 'The replica sync state machine: 1 for the current state (INFO sync_state), 0 for the others', labelNames: ['state'], registers: [registry],
    collect() {
      const state = src.replica().state;
      for (const s of SYNC_STATES) this.set({ state: s }, s === state ? 1 : 0);
    },
  });
  gauge(registry, 'replica_sync_confirmed', '1 once the full sync is confirmed and reads are served (INFO sync_confirmed)', () => (status()?.confirmed ? 1 : 0));
  gauge(registry, 'replica_sync_attempts', 'Attempts started in the current sync (INFO sync_attempts)', () => status()?.attempt ?? 0);
  new Counter({
    name: `${PREFIX}replica_sync_failures_total`, help: 'Failed sync attempts of the current SLAVEOF by error code (SYNCPROXY STATUS errors)', labelNames: ['code'], registers: [registry],
    collect() {
      this.reset();
      for (const r of status()?.history.records ?? []) this.inc({ code: r.error.code });
    },
  });
  gauge(registry, 'replica_copy_bytes', 'Snapshot bytes copied and verified so far (INFO master_sync_read_bytes)', () => status()?.copy.bytesDone ?? 0);
  gauge(registry, 'replica_copy_bytes_total_expected', 'Snapshot bytes to copy, as far as known; grows while the master still builds (INFO master_sync_total_bytes)', () => status()?.copy.bytesTotal ?? 0);
  totalCounter(registry, 'replica_chunk_retries_total', 'Chunk fetches retried in the current SLAVEOF (INFO sync_chunk_retries)', () => status()?.copy.chunkRetries ?? 0);
  totalCounter(registry, 'replica_snapshot_changes_total', 'Snapshots replaced under the copy in the current SLAVEOF (INFO sync_snapshot_changes)', () => status()?.snapshotChanges ?? 0);
  gauge(registry, 'replica_applied_offset', 'Master write log offset applied to the replica node (INFO slave_repl_offset)', () => status()?.apply?.appliedOffset ?? 0);
  gauge(registry, 'replica_master_offset', "The master's write log offset as last heard (INFO master_repl_offset on a replica)", () => {
    const s = status();
    return s ? masterOffsetOf(s) : 0;
  });
  new Gauge({
    name: `${PREFIX}verify_last_result`, help: 'Result of the last online verification: 1 for the current one (INFO verify_last_result)', labelNames: ['result'], registers: [registry],
    collect() {
      const result = verifyResult(status()?.verify);
      for (const r of VERIFY_RESULTS) this.set({ result: r }, r === result ? 1 : 0);
    },
  });
  gauge(registry, 'verify_mismatched_keys', 'Keys that differed in the last online verification (INFO verify_mismatched_keys)', () => status()?.verify?.differingKeys ?? 0);
  gauge(registry, 'verify_last_timestamp_seconds', 'Unix time of the last online verification, 0 for none (INFO verify_last_at)', () => (status()?.verify?.at ?? 0) / 1000);
}

/** Per replica of this master (INFO replication slaveN lines); refilled at each scrape, so a replica that left disappears. */
function addMasterMetrics(registry: Registry, src: MetricsSources): void {
  const lags = (): Array<{ replica: string; offsets: number; seconds: number }> => {
    const last = src.log.lastOffset;
    const now = Date.now();
    return src.replicas().map((r) => {
      const offsets = Math.max(0, last - r.offset);
      return { replica: `${r.host}:${r.port}`, offsets, seconds: offsets === 0 ? 0 : Math.max(0, now - r.lastSeenMs) / 1000 };
    });
  };
  new Gauge({
    name: `${PREFIX}replica_lag_offsets`, help: 'Write log entries this master has and has not sent to the replica (0 = caught up)', labelNames: ['replica'], registers: [registry],
    collect() {
      this.reset();
      for (const l of lags()) this.set({ replica: l.replica }, l.offsets);
    },
  });
  new Gauge({
    name: `${PREFIX}replica_lag_seconds`, help: 'Seconds since the replica was last sent an entry while it lags; 0 when it has every entry', labelNames: ['replica'], registers: [registry],
    collect() {
      this.reset();
      for (const l of lags()) this.set({ replica: l.replica }, l.seconds);
    },
  });
}
