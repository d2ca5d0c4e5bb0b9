/**
 * Facts about the node learned on every (re)connect of the first lane: its profile
 * (node-profile.ts: its kind, how many databases it has, how it takes expiries, ...), probed on a
 * connection of its own; its maxmemory (memory-limit.ts); and its run id. A node that restarted
 * may have lost data the log describes, so a changed run id starts a new log generation: replicas
 * then run a full sync instead of silently diverging. (A link drop with a write unanswered does
 * the same: OrderedPath.)
 */
import type { Logger } from 'pino';
import type { NodeConnection } from '../backend/node-connection';
import { NodeProfile, SAFE_PROFILE, describeProfile } from '../backend/node-profile';
import { SyncProxyError, describeError } from '../errors';
import { NodeAddress, probeNodeAt } from '../replication/node-pipeline';
import { decodeReply } from '../resp/decode';
import { encodeArgs } from '../resp/request-parser';
import type { WriteLog } from '../source/write-log';
import type { MemoryLimit } from './memory-limit';

/** How long one profile probe may take. */
const PROBE_TIMEOUT_MS = 30_000;

export class NodeFacts {
  dbCount = 16;
  profile?: NodeProfile;
  private nodeRunId?: string;
  private probed?: () => void;
  private readonly probedOnce = new Promise<void>((resolve) => (this.probed = resolve));
  private readonly profileListeners: ((profile: NodeProfile) => void)[] = [];

  constructor(private readonly connection: NodeConnection, private readonly address: NodeAddress, private readonly log: WriteLog, private readonly memoryLimit: MemoryLimit, private readonly logger: Logger) {
    connection.on('up', () => this.refresh());
  }

  /** Resolves after the first probe, or after `maxMs` (the node may be down at start). */
  firstProbe(maxMs: number): Promise<void> {
    return Promise.race([this.probedOnce, new Promise<void>((resolve) => setTimeout(resolve, maxMs).unref())]);
  }

  /** Told after every successful profile probe (every link-up of the first lane). */
  onProfile(listener: (profile: NodeProfile) => void): void {
    this.profileListeners.push(listener);
  }

  private refresh(): void {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new SyncProxyError('BACKEND_UNAVAILABLE', 'node profile probe timed out')), PROBE_TIMEOUT_MS);
    probeNodeAt(this.address, abort.signal).then(
      (profile) => {
        const changed = !this.profile || describeProfile(profile) !== describeProfile(this.profile);
        this.profile = profile;
        this.dbCount = profile.databases;
        if (changed) this.logger.info({ profile: describeProfile(profile) }, 'node profile probed');
        for (const listener of this.profileListeners) listener(profile);
      },
      (err: unknown) => {
        // Keep what is known; a node never probed is handled as the safe profile (one db, PEXPIRE).
        this.dbCount = this.profile?.databases ?? SAFE_PROFILE.databases;
        this.logger.warn({ err: describeError(err) }, 'node profile probe failed');
      },
    ).finally(() => {
      clearTimeout(timer);
      this.probed?.();
    });
    this.connection.send(encodeArgs(['INFO', 'server']), (reply) => {
      const text = reply && reply.type === 36 ? reply.raw.toString() : '';
      const runId = /run_id:(\w+)/.exec(text)?.[1];
      if (this.nodeRunId !== undefined && runId !== this.nodeRunId) {
        this.logger.warn({ previous: this.nodeRunId, now: runId }, 'backend node restarted');
        this.log.reset('backend node restarted');
      }
      this.nodeRunId = runId ?? `unknown-${Date.now()}`;
    });
    this.connection.send(encodeArgs(['CONFIG', 'GET', 'maxmemory']), (reply) => {
      const decoded = reply ? decodeReply(reply.raw) : null;
      this.memoryLimit.set(Array.isArray(decoded) && Buffer.isBuffer(decoded[1]) ? decoded[1].toString() : '0');
    });
  }
}
