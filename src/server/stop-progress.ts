/**
 * Which step of a graceful stop is running, so a stop that overruns --shutdown-timeout-ms (or is
 * cut short by a second signal) can say what was left undone: the step still running, with a
 * detail such as the replies still outstanding, and the steps not started.
 */

export class StopProgress {
  private readonly running = new Map<string, (() => string) | undefined>();
  private readonly finished = new Set<string>();

  /** `plan`: every step's name, in order, so the steps not yet started can be named too. */
  constructor(private readonly plan: readonly string[]) {}

  /** Runs one step, recorded as running until it settles. `detail` is read when described. */
  async step<T>(name: string, fn: () => Promise<T> | T, detail?: () => string): Promise<T> {
    this.running.set(name, detail);
    try {
      return await fn();
    } finally {
      this.running.delete(name);
      this.finished.add(name);
    }
  }

  get started(): boolean {
    return this.running.size > 0 || this.finished.size > 0;
  }

  /** e.g. `still running: sync service; not started: snapshot store, node connection, write log`. */
  describe(): string {
    if (!this.started) return 'the stop had not started';
    const running = [...this.running].map(([name, detail]) => {
      const text = detail?.();
      return text ? `${name} (${text})` : name;
    });
    const notStarted = this.plan.filter((name) => !this.running.has(name) && !this.finished.has(name));
    const parts: string[] = [];
    if (running.length > 0) parts.push(`still running: ${running.join(', ')}`);
    if (notStarted.length > 0) parts.push(`not started: ${notStarted.join(', ')}`);
    return parts.length > 0 ? parts.join('; ') : 'every stop step finished';
  }
}

/** The proxy's stop steps, in the order server/proxy.ts runs them. */
export const STOP_STEPS = ['draining replies in flight', 'replication', 'sync service', 'snapshot store', 'node connection', 'write log', 'metrics listener'] as const;
