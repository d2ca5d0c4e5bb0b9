/**
 * What a client session needs from the rest of the proxy: the ordered path, the replication
 * manager (as a narrow port, so src/server does not depend on src/replication's internals), the
 * write gate of a running snapshot build, shared registries and counters.
 */
import type { UnknownCommands } from './unknown-commands';
import type { CommandTiming } from '../metrics/command-timing';
import type { OnlineReport } from '../verify/online-verify';
import type { NodeProfile } from '../backend/node-profile';
import type { Logger } from 'pino';
import type { NodeConnection } from '../backend/node-connection';
import type { Config } from '../config';
import type { ReplyValue } from '../resp/encode';
import type { WriteGate } from '../source/types';
import type { BlockedClients } from './blocking';
import type { MemoryLimit } from './memory-limit';
import type { OrderedPath } from './ordered-path';
import type { ScriptWatch } from './script-watch';
import type { WatchRegistry } from './watch-registry';

export interface ReplicaInfo {
  runId: string;
  host: string;
  port: number;
  state: string;
  offset: number;
  lastSeenMs: number;
}

/** The master-side facts INFO replication and ROLE show. */
export interface MasterView {
  logId: string;
  firstOffset: number;
  lastOffset: number;
  replicas: ReplicaInfo[];
}

/** The replication manager as the server sees it (src/replication implements it). */
export interface ReplicationPort {
  readonly role: 'master' | 'replica';
  /** null: reads allowed; otherwise the RESP error text without the leading '-'. */
  readGate(): string | null;
  slaveof(host: string, port: number, force: boolean): Promise<'started' | 'already'>;
  noOne(): Promise<void>;
  /** A new full sync from the same master (the replica's node changed outside the sync). */
  resync(reason: string): Promise<void>;
  infoReplication(master: MasterView): string;
  roleReply(master: MasterView): ReplyValue;
  statusText(): string;
  status(): object;
  /** SYNCPROXY VERIFY: online comparison of the replica node with its master. */
  verify(): Promise<OnlineReport>;
}

export interface ProxyStats {
  startedAt: number;
  connectionsReceived: number;
  commandsProcessed: number;
  rejectedConnections: number;
  protocolErrors: number;
  outputLimitDisconnects: number;
}

export interface ProxyContext {
  readonly config: Readonly<Config>;
  readonly logger: Logger;
  readonly runId: string;
  readonly version: string;
  readonly path: OrderedPath;
  readonly replication: ReplicationPort;
  readonly watches: WatchRegistry;
  readonly blocked: BlockedClients;
  /** Scripts on their way through the node, and whether the node is busy with one (-BUSY). */
  readonly scripts: ScriptWatch;
  /** Whether the node refuses commands over its maxmemory (queue-time OOM in MULTI). */
  readonly memoryLimit: MemoryLimit;
  /** Whether the node says a command the table does not know writes (unknown-commands.ts). */
  readonly unknownCommands: UnknownCommands;
  readonly stats: ProxyStats;
  /** The connected clients (CLIENT LIST, CLIENT UNBLOCK, INFO). */
  readonly sessions: Set<{ readonly id: number; readonly pubsub: unknown; describe(): string }>;
  /** Databases the node has (SELECT is validated against it). */
  dbCount(): number;
  /** What the node was found to do at its last link-up (undefined before the first probe). */
  nodeProfile(): NodeProfile | undefined;
  syncPort(): number;
  /** The running snapshot build's copy-on-write gate, if any. */
  writeGate(): WriteGate | null;
  masterView(): MasterView;
  /** A new connection to the node for one client (pub/sub, blocking reads). */
  dedicatedConnection(): NodeConnection;
  /** INFO's `# Proxy` section. */
  proxyInfo(): string;
  /** Per-command timing for /metrics; undefined when --metrics-port is off. */
  readonly commandTiming?: CommandTiming;
}
