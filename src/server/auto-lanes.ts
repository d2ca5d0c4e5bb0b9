/**
 * How many lanes `--node-connections auto` gives, by the node's kind, and adding them later when
 * the kind was not known at the start (the node was down or slow to answer the probe: the proxy
 * then starts with one lane). Once a probe says the node is a kind that gets more, the lanes are
 * connected and added while clients are served (OrderedPath.growLanes keeps each key's writes in
 * order across the change). Lanes are only ever added: removing one would need the same care for
 * no gain, and a node that changes kind behind a running proxy is not a case worth it.
 */
import type { Logger } from 'pino';
import type { NodeConnection } from '../backend/node-connection';
import type { NodeProfile } from '../backend/node-profile';
import { describeError } from '../errors';
import type { OrderedPath } from './ordered-path';

/**
 * Lanes by node kind. Pika runs each connection on its worker threads in parallel, so one slow
 * command on one lane leaves the others going (bench/RESULTS.md "lanes"); Redis runs one command
 * at a time whatever the connections, where more lanes only split the batches the single
 * connection sends (fewer commands per syscall).
 */
const AUTO_LANES: Readonly<Record<string, number>> = { pika: 8 };

/** How long the new lanes' connections may take to come up. */
const CONNECT_WAIT_MS = 5000;

export function laneCount(configured: number, profile: NodeProfile | undefined): number {
  if (configured > 0) return configured;
  return AUTO_LANES[profile?.product ?? 'unknown'] ?? 1;
}

export interface LaneGrowthOptions {
  path: OrderedPath;
  /** A new lane's connection (reconnecting, not yet connected). */
  connection: (lane: number) => NodeConnection;
  stopping: () => boolean;
  logger: Logger;
}

/** For `--node-connections auto`: adds lanes when a later probe learns the node's kind. */
export class LaneGrowth {
  private growing = false;

  constructor(private readonly options: LaneGrowthOptions) {}

  /** A probe told the node's profile (NodeFacts.onProfile). */
  profileKnown(profile: NodeProfile): void {
    const wanted = laneCount(0, profile);
    if (this.growing || this.options.stopping() || wanted <= this.options.path.lanes.length) return;
    this.growing = true;
    void this.grow(wanted).finally(() => (this.growing = false));
  }

  private async grow(wanted: number): Promise<void> {
    const { path, logger } = this.options;
    const from = path.lanes.length;
    const connections = Array.from({ length: wanted - from }, (_, i) => this.options.connection(from + i));
    const failure = await Promise.race([
      Promise.all(connections.map((c) => c.connect())).then(() => null, (err: unknown) => describeError(err)),
      new Promise<string>((resolve) => setTimeout(() => resolve(`not up within ${CONNECT_WAIT_MS} ms`), CONNECT_WAIT_MS).unref()),
    ]);
    if (failure !== null || this.options.stopping()) {
      for (const c of connections) c.destroy();
      if (failure !== null) logger.warn({ err: failure, nodeConnections: from, wanted }, 'new lanes did not connect; trying again at the next link-up');
      return;
    }
    if (path.growLanes(connections)) {
      logger.info({ nodeConnections: path.lanes.length, was: from }, 'lanes added: the node is of a kind that runs connections in parallel');
      return;
    }
    // Writes were waiting in a client's order under the old count (never from one lane).
    for (const c of connections) c.destroy();
    logger.warn({ nodeConnections: from, wanted }, 'lanes not added: writes were waiting in a client\'s order; trying again at the next link-up');
  }
}
