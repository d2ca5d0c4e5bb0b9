/**
 * What the suites need from a node, whichever it is: a real redis-server (RedisServer) or a real
 * Pika 4.0.1 (PikaServer). Suites that must hold on both loop over NODE_KINDS:
 *
 *   for (const kind of NODE_KINDS) describe(kind, () => { ... startNode(kind) ... });
 *
 * Differences a suite has to respect are here, not spread over the tests: the dbs it may use
 * (Pika has one database), and whether restart() keeps the data (Pika persists, our redis-servers
 * run without persistence).
 */
import type Redis from 'ioredis';
import { PikaServer } from './pika-server';
import { RedisServer } from './redis-server';

export type NodeKind = 'redis' | 'pika';

/** The matrix of real node kinds every replication suite runs on. */
export const NODE_KINDS: readonly NodeKind[] = ['redis', 'pika'];

/** The dbs seeded and compared per kind: redis-server has 16 (the suites use 0, 3, 7), Pika one. */
export const DATA_DBS_BY_KIND: Readonly<Record<NodeKind, readonly number[]>> = { redis: [0, 3, 7], pika: [0] };

export function dataDbs(kind: NodeKind): number[] {
  return [...DATA_DBS_BY_KIND[kind]];
}

/** The surface RedisServer and PikaServer share. */
export interface TestNode {
  readonly kind: NodeKind;
  readonly host: string;
  readonly port: number;
  readonly address: string;
  readonly pid: number | undefined;
  /** Whether restart() comes back with the data written before (Pika) or empty (redis-server). */
  readonly persistsAcrossRestart: boolean;
  /** An ioredis client straight to the node (db must be one of dataDbs(kind)). */
  client(db?: number): Redis;
  /** Stops the node (redis-server: SIGTERM; Pika: SIGKILL, it takes ~10 s on SIGTERM) and removes its dir. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
  /** SIGKILL and start again on the same port(s); data kept only if persistsAcrossRestart. */
  restart(): Promise<void>;
}

export interface StartNodeOptions {
  /** redis-server only: the Pika-profile (commands Pika lacks renamed away). */
  pikaProfile?: boolean;
  /** redis-server only. */
  password?: string;
}

export async function startNode(kind: NodeKind, options: StartNodeOptions = {}): Promise<TestNode> {
  if (kind === 'pika') {
    if (options.password) throw new Error('PikaServer does not take a password in these tests');
    return PikaServer.start();
  }
  return RedisServer.start(options);
}
