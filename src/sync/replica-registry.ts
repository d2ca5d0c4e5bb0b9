/**
 * Which replicas talk to this master, for INFO replication's connected_slaves / slaveN lines.
 * A replica is 'sync' while it fetches meta and chunks and 'online' while a log stream to it is
 * open. One that made no call for FORGET_AFTER_MS (and has no open stream) is forgotten.
 */

export const FORGET_AFTER_MS = 60_000;
/** Bound on tracked replicas, so identities from the wire cannot grow the map without limit. */
const MAX_TRACKED_REPLICAS = 1024;

export interface ReplicaInfo {
  runId: string;
  host: string;
  port: number;
  state: 'sync' | 'online';
  /** 'online': the last log offset sent to it; 'sync': the master offset when it asked for meta. */
  offset: number;
  lastSeenMs: number;
}

interface Tracked extends ReplicaInfo {
  openStreams: number;
}

export interface ReplicaIdentity {
  runId: string;
  host: string;
  port: number;
}

export class ReplicaRegistry {
  private readonly byRunId = new Map<string, Tracked>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A GetMeta / GetChunk call: the replica is (still) copying. */
  syncing(id: ReplicaIdentity, offset?: number): void {
    const r = this.touch(id);
    if (!r) return;
    r.state = 'sync';
    if (offset !== undefined) r.offset = offset;
  }

  /** A StreamLog call opened; returns the function to call when it closes. */
  streamOpened(id: ReplicaIdentity, fromOffset: number): { sent(offset: number): void; closed(): void } {
    const r = this.touch(id);
    if (!r) return { sent: () => undefined, closed: () => undefined };
    r.state = 'online';
    r.openStreams++;
    r.offset = Math.max(0, fromOffset - 1);
    let open = true;
    return {
      sent: (offset: number) => {
        r.offset = offset;
        r.lastSeenMs = this.now();
      },
      closed: () => {
        if (!open) return;
        open = false;
        r.openStreams--;
        r.lastSeenMs = this.now();
        // A replica whose last stream closed is no longer connected (Redis drops it the same way).
        if (r.openStreams === 0 && r.state === 'online' && this.byRunId.get(r.runId) === r) this.byRunId.delete(r.runId);
      },
    };
  }

  list(): ReplicaInfo[] {
    this.prune();
    return [...this.byRunId.values()].map(({ runId, host, port, state, offset, lastSeenMs }) => ({ runId, host, port, state, offset, lastSeenMs }));
  }

  private touch(id: ReplicaIdentity): Tracked | undefined {
    if (!id.runId) return undefined; // anonymous callers (tools, tests) are served but not listed
    this.prune();
    let r = this.byRunId.get(id.runId);
    if (!r) {
      if (this.byRunId.size >= MAX_TRACKED_REPLICAS) return undefined;
      r = { runId: id.runId, host: id.host, port: id.port, state: 'sync', offset: 0, lastSeenMs: this.now(), openStreams: 0 };
      this.byRunId.set(id.runId, r);
    }
    r.host = id.host;
    r.port = id.port;
    r.lastSeenMs = this.now();
    return r;
  }

  private prune(): void {
    const cutoff = this.now() - FORGET_AFTER_MS;
    for (const [runId, r] of this.byRunId) {
      if (r.openStreams === 0 && r.lastSeenMs < cutoff) this.byRunId.delete(runId);
    }
  }
}
