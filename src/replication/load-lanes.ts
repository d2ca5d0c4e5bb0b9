/**
 * The loader's connections to its node ("load lanes", --load-connections). Pika runs one
 * connection's commands on one worker thread at a time and different connections in parallel, and
 * its write path is what bounds a full sync: through one connection its other workers stay idle.
 * The rule is the data path's (src/server/lanes.ts): every command of one key record travels the
 * lane its key hashes to, in file order, so a key's DEL, its writes, its later parts (PSP.PART)
 * and its expiry reach the node in order; records on different lanes touch different keys and
 * commute. What is no one key's — FLUSHALL, the counts — runs only once every lane is drained.
 */
import { SyncProxyError } from '../errors';
import type { NodeProfile } from '../backend/node-profile';
import type { LoadBatch } from './load-batch';
import { CLOSE_DRAIN_MS, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_BYTES, FLUSH_REPLY_TIMEOUT_MS, NodeAddress, NodePipeline } from './node-pipeline';
import { expectOk } from './node-replies';

/**
 * Load lanes for --load-connections auto, by node kind: 1 everywhere, from measurements. Redis
 * executes one command at a time, where more connections only add their own overhead; Pika 4.0.1
 * on a 2-CPU machine loaded 1M keys in 13.9 s through one lane and 16.5-17.2 s through eight, its
 * CPU for the same writes ~30% higher (bench/RESULTS.md, pika-load-lanes). Set the flag on a
 * machine where Pika has cores to spare and measure with bench/pika-load-lanes.ts.
 */
const AUTO_LOAD_LANES: Readonly<Record<string, number>> = {};

/** The number of load lanes: the configured one, or (0 = auto) the one for this node's kind. */
export function loadLaneCount(configured: number, profile: NodeProfile): number {
  if (configured > 0) return configured;
  return AUTO_LOAD_LANES[profile.product] ?? 1;
}

/** Bounds on what the load keeps unanswered on the node, over all its lanes together. */
export interface LoadBounds {
  maxInFlight?: number;
  maxInFlightBytes?: number;
}

export class LoadLanes {
  /** The db each lane's connection has selected; -1 = not known (a SELECT is sent first). */
  readonly dbs: number[];

  private constructor(private readonly pipelines: NodePipeline[]) {
    this.dbs = pipelines.map(() => -1);
  }

  /**
   * Opens `count` connections. The bounds are split between them, so the whole load keeps no more
   * in flight than one connection did (DESIGN.md invariant 6).
   */
  static async open(address: NodeAddress, count: number, signal: AbortSignal, bounds: LoadBounds = {}): Promise<LoadLanes> {
    const maxInFlight = Math.max(1, Math.floor((bounds.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT) / count));
    const maxInFlightBytes = Math.max(1, Math.floor((bounds.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES) / count));
    const opened = await Promise.allSettled(Array.from({ length: count }, () => NodePipeline.connect(address, signal, maxInFlight, maxInFlightBytes)));
    const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    const pipelines = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    if (failed) {
      for (const p of pipelines) p.close();
      throw failed.reason;
    }
    return new LoadLanes(pipelines);
  }

  get count(): number {
    return this.pipelines.length;
  }

  /** The lane for counting and other keyless work, once every lane is drained. */
  get first(): NodePipeline {
    return this.pipelines[0];
  }

  /** The lane of a key whose bytes hash to `hash` (keyHash). */
  laneOf(hash: number): number {
    return (hash >>> 0) % this.pipelines.length;
  }

  /**
   * Sends each lane its batch (`batches[lane]`, finished here) and waits until every lane is
   * back within its bounds. All are queued before any wait, so one full lane does not hold back
   * the others' commands.
   */
  async send(batches: ReadonlyArray<LoadBatch | undefined>): Promise<void> {
    const sending: Array<Promise<void>> = [];
    batches.forEach((batch, lane) => {
      if (!batch) return;
      const parts = batch.finish();
      if (batch.count > 0) sending.push(this.pipelines[lane].sendMany(parts, batch.count, batch.check));
    });
    await Promise.all(sending);
  }

  /**
   * Waits until every lane has every reply in and checked; throws the first lane's failure, but
   * only once the other lanes are drained too (nothing of the load still runs on the node).
   */
  async drain(): Promise<void> {
    const drained = await Promise.allSettled(this.pipelines.map((p) => p.flush()));
    const failed = drained.find((d): d is PromiseRejectedResult => d.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * FLUSHALL once nothing of any load is in flight: every lane drained, and every closed
   * pipeline's replies in (an earlier attempt's lanes). Pika 4.0.1 deadlocks when a FLUSHALL
   * meets a write in progress on another connection (node-pipeline.ts close()).
   */
  async flushAll(): Promise<void> {
    await this.drain();
    if (!(await NodePipeline.settled(CLOSE_DRAIN_MS))) {
      throw new SyncProxyError('BACKEND_TIMEOUT', `the node did not answer every command of an earlier load within ${CLOSE_DRAIN_MS} ms; FLUSHALL not sent`);
    }
    expectOk(await this.first.callWithin(['FLUSHALL'], FLUSH_REPLY_TIMEOUT_MS), 'FLUSHALL', 'LOAD_FAILED');
  }

  /** Closes every lane (each keeps its socket until the replies of what it sent are in). */
  close(): void {
    for (const p of this.pipelines) p.close();
  }
}
