/**
 * `pika_sync_proxy_command_duration_seconds{class,outcome}`: how long each client command took in
 * the proxy, from the event that let it run (its bytes arriving, or the client's previous
 * blocking command finishing) to the turn-end write that hands its reply to the socket — the
 * latency the client sees, head-of-line waits included.
 *
 * Why not prom-client's `Histogram.observe` on the data path: it costs ~320 ns per call (label
 * object, validation, a hashed string key; measured on the CI machine), while the proxy spends
 * ~1 µs of CPU per pipelined request in all (bench/RESULTS.md): ~30% more CPU. Here a command
 * costs two typed-array stores when its reply slot is taken, and a bucket search and two adds when
 * the reply is written (one clock read per data event and per write, not per command). The
 * counts are handed to prom-client at scrape time, which writes the exposition (no hand-written
 * text): `CommandDurationHistogram` is a prom-client Histogram whose values come from here.
 *
 * A client in pub/sub mode gets its SUBSCRIBE/UNSUBSCRIBE/PING answers as pushes of the subscriber
 * connection, not told apart from messages: those commands are not observed (ClientSession.push).
 */
import { Histogram, Registry } from 'prom-client';
import { CATEGORIES } from '../server/command-table';

/** Labels of `class`: the command table's categories, and `unknown` (forwarded as a read). */
export const COMMAND_CLASSES: readonly string[] = [...CATEGORIES, 'unknown'];
export const UNKNOWN_CLASS = CATEGORIES.length;
/** A slot that does not answer a command (a pub/sub push, a protocol error): not observed. */
export const UNTIMED = 0x7f;
const ERROR_BIT = 0x80;

/** Upper bounds in seconds: 100 µs (a pipelined command) to 10 s (a blocking pop). */
export const DURATION_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BOUNDS_MS = Float64Array.from(DURATION_BUCKETS, (s) => s * 1000);
/** Buckets per series: the bounds and +Inf. */
const STRIDE = DURATION_BUCKETS.length + 1;
const OUTCOMES = ['ok', 'error'] as const;

/** The process-wide counts: per (class, outcome) series, a count per bucket (not cumulative) and a sum. */
export class CommandTiming {
  readonly counts = new Float64Array(COMMAND_CLASSES.length * 2 * STRIDE);
  readonly sumsMs = new Float64Array(COMMAND_CLASSES.length * 2);

  /** `code` = slot code (class index, ERROR_BIT when the reply was an error). */
  observe(code: number, ms: number): void {
    const series = (code & UNTIMED) * 2 + (code >>> 7);
    let b = 0;
    while (b < BOUNDS_MS.length && ms > BOUNDS_MS[b]) b++;
    this.counts[series * STRIDE + b]++;
    this.sumsMs[series] += ms;
  }
}

/**
 * One client's slots in flight: start time and code per slot, in rings indexed by slot number
 * (slots are sequence numbers, ReplyQueue). Live slots are those taken and not yet written; the
 * rings double when more are live than they hold (a long pipeline), and never shrink.
 */
export class SlotTimes {
  private starts = new Float64Array(64);
  private codes = new Uint8Array(64);
  private mask = 63;

  constructor(private readonly timing: CommandTiming) {}

  /** Slot `slot` was taken; `oldest` is the first slot not yet written. */
  taken(slot: number, oldest: number, code: number, startMs: number): void {
    if (slot - oldest > this.mask) this.grow(oldest, slot);
    const i = slot & this.mask;
    this.starts[i] = startMs;
    this.codes[i] = code;
  }

  /** The reply of `slot` is an error reply. */
  failed(slot: number): void {
    this.codes[slot & this.mask] |= ERROR_BIT;
  }

  /** Slots `[from, to)` were written to the socket at `nowMs`. */
  written(from: number, to: number, nowMs: number): void {
    for (let s = from; s < to; s++) {
      const i = s & this.mask;
      const code = this.codes[i];
      if ((code & UNTIMED) !== UNTIMED) this.timing.observe(code, nowMs - this.starts[i]);
    }
  }

  private grow(oldest: number, slot: number): void {
    let size = this.mask + 1;
    while (slot - oldest >= size) size *= 2;
    const starts = new Float64Array(size);
    const codes = new Uint8Array(size);
    const mask = size - 1;
    for (let s = oldest; s < slot; s++) {
      starts[s & mask] = this.starts[s & this.mask];
      codes[s & mask] = this.codes[s & this.mask];
    }
    this.starts = starts;
    this.codes = codes;
    this.mask = mask;
  }
}

const NAME = 'pika_sync_proxy_command_duration_seconds';
const HELP = 'Client commands by class (the command table category) and outcome (error = an error reply), from the event that let the command run to its reply being written to the client';

interface HistogramValue {
  value: number;
  labels: Record<string, string | number>;
  metricName: string;
}

/** A prom-client Histogram reporting CommandTiming's counts (series with no command are left out). */
export class CommandDurationHistogram extends Histogram<'class' | 'outcome'> {
  constructor(private readonly timing: CommandTiming, registry: Registry) {
    super({
      name: NAME,
      help: HELP,
      labelNames: ['class', 'outcome'],
      buckets: [...DURATION_BUCKETS],
      registers: [registry],
    });
  }

  override async get(): Promise<Awaited<ReturnType<Histogram['get']>>> {
    const values: HistogramValue[] = [];
    for (let series = 0; series < COMMAND_CLASSES.length * 2; series++) {
      const labels = { class: COMMAND_CLASSES[series >> 1], outcome: OUTCOMES[series & 1] };
      let cumulative = 0;
      const buckets: HistogramValue[] = [];
      for (let b = 0; b < STRIDE; b++) {
        cumulative += this.timing.counts[series * STRIDE + b];
        buckets.push({ labels: { ...labels, le: b < DURATION_BUCKETS.length ? DURATION_BUCKETS[b] : '+Inf' }, value: cumulative, metricName: `${NAME}_bucket` });
      }
      if (cumulative === 0) continue;
      values.push(...buckets,
        { labels, value: this.timing.sumsMs[series] / 1000, metricName: `${NAME}_sum` },
        { labels, value: cumulative, metricName: `${NAME}_count` });
    }
    return { name: NAME, help: HELP, type: 'histogram', aggregator: 'sum', values } as unknown as Awaited<ReturnType<Histogram['get']>>;
  }

  /** The registry asks for this form first (prom-client's Registry.getMetricsAsString). */
  getForPromString(): ReturnType<Histogram['get']> {
    return this.get();
  }
}
