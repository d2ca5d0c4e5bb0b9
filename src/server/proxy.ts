/**
 * Assembles one proxy: the RESP listener, the ordered node connection, the write log, the
 * snapshot store, the gRPC sync service and the replication manager; and stops them gracefully
 * (stop accepting, drain replies in flight, close the node connection).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { NodeConnection } from '../backend/node-connection';
import { describeProfile } from '../backend/node-profile';
import type { Config } from '../config';
import { SyncProxyError } from '../errors';
import { MetricsServer } from '../metrics/http-server';
import { CommandTiming } from '../metrics/command-timing';
import { createRegistry } from '../metrics/registry';
import { ReplicationManager } from '../replication/replication-manager';
import * as encode from '../resp/encode';
import { SnapshotStore } from '../source/snapshot-store';
import { WriteLog } from '../source/write-log';
import { SyncServer } from '../sync/sync-server';
import { BlockedClients } from './blocking';
import { ClientSession } from './client-session';
import type { MasterView, ProxyContext, ProxyStats, ReplicationPort } from './context';
import { ScriptWatch } from './script-watch';
import { MemoryLimit } from './memory-limit';
import { OrderedPath } from './ordered-path';
import { ClientGuard, refuseProtected } from './protected-mode';
import { STOP_STEPS, StopProgress } from './stop-progress';
import { WatchRegistry } from './watch-registry';
import { nodeProbes } from './node-probes';
import { NodeFacts } from './node-facts';
import { LaneGrowth, laneCount } from './auto-lanes';
import { UnknownCommands } from './unknown-commands';

/** How long the start waits for the first node probe (the node may be down). */
const PROBE_WAIT_MS = 5000;

export const VERSION: string = (require('../../../package.json') as { version: string }).version;

export interface ProxyHandle {
  readonly port: number;
  readonly syncPort: number;
  /** The bound /metrics, /healthz, /readyz port; -1 when --metrics-port is off. */
  readonly metricsPort: number;
  readonly runId: string;
  /** What stop() has done and is doing (for a stop that overruns --shutdown-timeout-ms). */
  readonly stopProgress: StopProgress;
  stop(): Promise<void>;
}

export async function startProxy(config: Readonly<Config>, rootLogger: Logger): Promise<ProxyHandle> {
  const runId = randomBytes(20).toString('hex');
  const logger = rootLogger.child({ component: 'proxy' });
  const log = new WriteLog({ dir: path.join(config.dataDir, 'log'), maxBytes: config.writeLog.maxBytes, segmentBytes: config.writeLog.segmentBytes, logger: rootLogger.child({ component: 'write-log' }) });
  await log.open();

  const nodeOptions = { host: config.backend.host, port: config.backend.port, password: config.backendPassword, keepAliveMs: config.nodeKeepAliveMs };
  const laneConnection = (lane: number): NodeConnection => new NodeConnection({ ...nodeOptions, reconnect: true, logger: rootLogger.child({ component: 'backend', lane }) });
  const connection = laneConnection(0);
  const orderedPath = new OrderedPath(connection, log, rootLogger.child({ component: 'ordered-path' }));
  const memoryLimit: MemoryLimit = new MemoryLimit((): string | undefined => node.profile?.product);
  const node = new NodeFacts(connection, nodeOptions, log, memoryLimit, logger);
  const store = new SnapshotStore({
    dir: path.join(config.dataDir, 'snapshots'), node: nodeOptions, fileSize: config.snapshot.fileSize, maxAgeMs: config.snapshot.maxAgeMs,
    maxTrackedKeys: config.snapshot.maxTrackedKeys, log, ordered: orderedPath, logger: rootLogger.child({ component: 'snapshot' }),
    nodeProfile: () => node.profile,
  });
  await store.init();

  const watches = new WatchRegistry(nodeProbes(orderedPath, () => node.dbCount));
  const blocked = new BlockedClients();
  orderedPath.onDispatch((scope, _origin, command) => watches.touched(scope, command));
  orderedPath.onApplied((scope, origin) => blocked.applied(scope, origin));

  const sessions = new Set<ClientSession>();
  const stats: ProxyStats = { startedAt: Date.now(), connectionsReceived: 0, commandsProcessed: 0, rejectedConnections: 0, protocolErrors: 0, outputLimitDisconnects: 0 };

  const guard = new ClientGuard(config);
  const listener = net.createServer();
  // Connections accepted before the proxy is fully assembled wait here instead of being lost.
  const early: net.Socket[] = [];
  let accept: (socket: net.Socket) => void = (socket) => early.push(socket);
  listener.on('connection', (socket) => accept(socket));
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(config.port, config.bind, () => resolve());
  });
  const port = (listener.address() as net.AddressInfo).port;

  let syncPort = 0;
  const replication = new ReplicationManager({ config, logger: rootLogger.child({ component: 'replication' }), runId, self: { host: config.bind, port } });
  const replicationPort: ReplicationPort = replication;
  const syncServer = new SyncServer({
    bind: config.bind, port: config.syncPort, password: config.requirepass,
    tls: config.tls.cert && config.tls.key ? { cert: config.tls.cert, key: config.tls.key, ca: config.tls.ca } : undefined,
    store, log, runId, isMaster: () => replication.role === 'master', logger: rootLogger, guard,
  });
  try {
    syncPort = await syncServer.start();
  } catch (err) {
    listener.close();
    throw new SyncProxyError('CONFIG_INVALID', `cannot listen on --sync-port ${config.syncPort}: ${(err as Error).message}`, { cause: err });
  }
  replication.onRoleChange((role) => {
    orderedPath.logging = role === 'master';
    // A promoted replica's node was written by the applier, not through this log: start a new
    // log generation so nobody continues from offsets that do not describe this node.
    if (role === 'master') log.reset('promoted to master');
  });

  // Created before any session: each session's reply queue times its commands into it.
  const commandTiming = config.metrics.port >= 0 ? new CommandTiming() : undefined;
  let metricsPort = -1;
  let stopping: Promise<void> | undefined;

  const masterView = (): MasterView => ({ logId: log.logId, firstOffset: log.firstOffset, lastOffset: log.lastOffset, replicas: syncServer.replicas() });
  const dedicatedConnection = (): NodeConnection => new NodeConnection({ ...nodeOptions, reconnect: false, logger: rootLogger.child({ component: 'backend-dedicated' }) });
  const ctx: ProxyContext = {
    config, logger, runId, version: VERSION, path: orderedPath, replication: replicationPort, watches, blocked, stats, sessions, commandTiming,
    dbCount: () => node.dbCount,
    nodeProfile: () => node.profile,
    syncPort: () => syncPort,
    writeGate: () => (replication.role === 'master' && store.isBuilding ? store : null),
    masterView,
    dedicatedConnection,
    scripts: new ScriptWatch(dedicatedConnection),
    memoryLimit,
    unknownCommands: new UnknownCommands(orderedPath),
    proxyInfo: () =>
      [
        '# Proxy', `proxy_version:${VERSION}`, `proxy_run_id:${runId}`, `uptime_in_seconds:${Math.floor((Date.now() - stats.startedAt) / 1000)}`,
        `tcp_port:${port}`, `sync_port:${syncPort}`, `node_connections:${orderedPath.lanes.length}`, `metrics_port:${metricsPort}`, `backend:${connection.address}`, `backend_link_status:${connection.isUp ? 'up' : 'down'}`,
        `node_profile:${node.profile ? describeProfile(node.profile) : 'not probed yet'}`,
        `backend_keepalive_ms:${connection.keepAliveStatus.intervalMs}`, `backend_keepalive_pings:${connection.keepAliveStatus.pings}`,
        `connected_clients:${sessions.size}`, `blocked_clients:${blocked.count}`, `total_connections_received:${stats.connectionsReceived}`, `total_commands_processed:${stats.commandsProcessed}`,
        `rejected_connections:${stats.rejectedConnections}`, `protocol_errors:${stats.protocolErrors}`, `client_output_limit_disconnections:${stats.outputLimitDisconnects}`,
        `write_log_id:${log.logId}`, `write_log_first_offset:${log.firstOffset}`, `write_log_last_offset:${log.lastOffset}`, `write_log_bytes:${log.bytes}`,
        `snapshot_build:${JSON.stringify(store.buildStatus()).replace(/[\r\n]/g, ' ')}`,
        `snapshot_builds:${store.buildTotals().builds}`, `snapshot_build_failures:${store.buildTotals().failures}`,
        `snapshot_last_build:${JSON.stringify(store.buildTotals().last ?? null)}`, `used_memory_rss_proxy:${process.memoryUsage().rss}`, '',
      ].join('\r\n'),
  };

  // Bound before the first client is served, so INFO never shows metrics_port:-1 while it is on.
  let metrics: MetricsServer | undefined;
  if (commandTiming) {
    const registry = createRegistry({
      version: VERSION, runId, role: () => replication.role, node: connection, stats, connectedClients: () => sessions.size,
      log, logMaxBytes: config.writeLog.maxBytes, snapshotBuilds: () => store.buildTotals(),
      replica: () => replication.metricsView(), replicas: () => syncServer.replicas(),
    }, commandTiming);
    metrics = new MetricsServer(registry, {
      node: connection, role: () => replication.role, readGate: () => replication.readGate(), stopping: () => stopping !== undefined,
    }, rootLogger.child({ component: 'metrics' }));
    try {
      metricsPort = await metrics.listen(config.metrics.port, config.metrics.bind);
    } catch (err) {
      listener.close();
      await syncServer.stop();
      throw new SyncProxyError('CONFIG_INVALID', `cannot listen on --metrics-port ${config.metrics.port}: ${(err as Error).message}`, { cause: err });
    }
  }

  connection.connect().catch(() => undefined); // reconnects by itself; clients get prompt errors meanwhile
  await replication.start();
  // Snapshots, SELECT checks and the number of lanes use the node's profile: wait a little for
  // the first probe. The lanes are all there before the first client command (a key's lane
  // follows from their number, so it never changes while writes may be in flight).
  await node.firstProbe(PROBE_WAIT_MS);
  const lanes = laneCount(config.nodeConnections, node.profile);
  orderedPath.addLanes(Array.from({ length: lanes - 1 }, (_, i) => laneConnection(i + 1)));
  // Clients wait a little for the new lanes too: a write whose key hashes to a lane still
  // connecting would be refused (BACKEND_UNAVAILABLE) while lane 0 is up.
  const lanesUp = Promise.all(orderedPath.lanes.slice(1).map((lane) => lane.connection.connect().catch(() => undefined)));
  await Promise.race([lanesUp, new Promise<void>((resolve) => setTimeout(resolve, PROBE_WAIT_MS).unref())]);
  // --node-connections auto with the node's kind unknown so far (down, or slow to answer): its
  // lanes are added once a probe tells it (auto-lanes.ts).
  const growth = config.nodeConnections === 0 ? new LaneGrowth({ path: orderedPath, connection: laneConnection, stopping: () => stopping !== undefined, logger: rootLogger.child({ component: 'lanes' }) }) : undefined;
  if (growth) {
    node.onProfile((profile) => growth.profileKnown(profile));
    if (node.profile) growth.profileKnown(node.profile);
  }
  accept = (socket) => {
    stats.connectionsReceived++;
    if (!guard.allows(socket.remoteAddress)) return refuseProtected(socket);
    if (sessions.size >= config.maxClients) {
      stats.rejectedConnections++;
      socket.end(encode.error('ERR max number of clients reached'));
      return;
    }
    const session = new ClientSession(socket, ctx);
    sessions.add(session);
    session.onClosed(() => sessions.delete(session));
  };
  early.splice(0).forEach(accept);
  logger.info({ port, syncPort, metricsPort, backend: connection.address, nodeConnections: lanes, runId, dataDir: config.dataDir }, 'pika-sync-proxy listening');
  guard.logProtection(logger);

  const stopProgress = new StopProgress(STOP_STEPS);
  const step = stopProgress.step.bind(stopProgress);
  const outstanding = (): string => `${orderedPath.inFlight} node replies outstanding, ${[...sessions].filter((s) => !s.drained).length} client sessions not drained`;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info('stopping: no new connections, draining replies in flight');
      listener.close();
      for (const s of sessions) s.stopAccepting();
      const deadline = Date.now() + 5000;
      await step('draining replies in flight', async () => {
        while ((orderedPath.inFlight > 0 || [...sessions].some((s) => !s.drained)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      }, outstanding);
      for (const s of sessions) s.socket.end();
      await step('replication', () => replication.stop());
      await step('sync service', () => syncServer.stop());
      await step('snapshot store', () => store.close());
      await step('node connections', async () => void (await Promise.all(orderedPath.lanes.map((lane) => lane.connection.close()))), outstanding);
      await step('write log', () => log.close());
      await step('metrics listener', async () => metrics?.close());
      for (const s of sessions) s.socket.destroy();
      logger.info('stopped');
    })());
  return { port, syncPort, metricsPort, runId, stopProgress, stop };
}
