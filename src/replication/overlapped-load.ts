import { SyncProxyError } from '../errors';
import type { SnapshotLoader } from './loader';
import type { ReplicaStatus } from './replica-status';
import type { MetaAnswer } from './sync-api';

/**
 * Loads a snapshot's files in manifest order, each as soon as the copier reports it verified. The
 * first file begins the load (FLUSHALL). The manifest may be partial: `extend` brings later ones,
 * and the load is done once the complete manifest's files are loaded. `stop` ends it (reading
 * stops, everything sent is answered); `done` waits until every file is loaded.
 */
export class OverlappedLoad {
  private readonly ready: Array<string | undefined> = [];
  private readonly stopper = new AbortController();
  private wake?: () => void;
  private readonly run: Promise<void>;
  failure?: unknown;
  onFailure?: (err: unknown) => void;
  filesLoaded = 0;

  constructor(private readonly loader: SnapshotLoader, private meta: MetaAnswer, private readonly status: ReplicaStatus, signal: AbortSignal) {
    const onAbort = (): void => {
      this.stopper.abort(signal.reason);
      this.wake?.();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    this.run = this.loadAll()
      .catch((err) => {
        if (this.stopper.signal.aborted && this.failure === undefined) return;
        this.failure = err;
        this.onFailure?.(err);
      })
      .finally(() => signal.removeEventListener('abort', onAbort));
  }

  /** A later manifest of the same snapshot (the copier checked that it extends this one). */
  extend(meta: MetaAnswer): void {
    this.meta = meta;
    this.wake?.();
  }

  fileVerified(index: number, path: string): void {
    this.ready[index] = path;
    this.wake?.();
  }

  /** Resolves once every file is loaded; throws the load's failure. */
  async done(): Promise<void> {
    await this.run;
    if (this.failure !== undefined) throw this.failure;
    if (this.stopper.signal.aborted) throw this.stopper.signal.reason;
  }

  /** Stops reading files and waits until the node has answered everything sent. */
  async stop(): Promise<void> {
    if (!this.stopper.signal.aborted) this.stopper.abort(new SyncProxyError('INTERNAL', 'load stopped'));
    this.wake?.();
    await this.run;
    await this.loader.drain().catch(() => undefined);
  }

  private async loadAll(): Promise<void> {
    const { status, loader } = this;
    const stop = this.stopper.signal;
    for (let i = 0; ; i++) {
      // File i is verified, or the complete manifest has no file i (an empty snapshot has none).
      while (this.ready[i] === undefined && (this.meta.partial || i < this.meta.files.length)) {
        if (stop.aborted) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
      if (stop.aborted) return;
      if (i === 0) {
        // From here on SLAVEOF NO ONE flushes the node (nothing partial may stay).
        status.loadBegun = true;
        await loader.begin(this.meta, (bytes) => (status.loadBytesDone = bytes));
      }
      const path = this.ready[i];
      if (path === undefined) return;
      loader.extend(this.meta);
      await loader.loadFile({ name: this.meta.files[i].name, path }, stop);
      this.filesLoaded++;
    }
  }
}
