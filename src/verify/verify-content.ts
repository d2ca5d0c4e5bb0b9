/**
 * The proof by content: does a node hold exactly what a reference holds? Both sides are digested
 * per key-hash range (./content-digest.ts); ranges that agree are done, ranges that differ are
 * read again key by key on both sides and compared with the expiry tolerance, so only a real
 * difference is reported — never a key that merely expired while it was being read.
 *
 * Tolerances: an expiry may differ by TTL_TOLERANCE_MS between the sides (the replica applies it
 * when the command reaches its node); a key whose expiry lies within EXPIRY_MARGIN_MS of the check
 * is left out, on both sides, as are keys that expired since.
 */
import { ContentDigest, KeyEntry, RANGES, RangeDigest } from './content-digest';

export const TTL_TOLERANCE_MS = 1000;
const EXPIRY_MARGIN_MS = 1000;
/**
 * Per key with a TTL, what the expiry sum of a range may drift before it is examined key by key:
 * the per-key tolerance itself. On Pika every replica expiry lands later by its PEXPIRE's queue
 * time (~0.1 s during a load measured at 1M keys), so a tighter bound sent every range to the
 * key-by-key examination (a second full read, and its memory).
 */
const PER_KEY_DRIFT_S = TTL_TOLERANCE_MS / 1000;
/** Ranges examined key by key in one pass (bounds the keys held: 1/16 of the dataset). */
const RANGES_PER_PASS = 64;
/** Differences named in the error and in the status. */
const MAX_REPORTED = 10;

/** Feeds one side's records into a digest and closes it; called again for the ranges that differ. */
export type DatasetSide = (digest: ContentDigest, onlyRanges?: ReadonlySet<number>) => Promise<void>;

export interface KeyDifference {
  db: number;
  /** The key as UTF-8 text (lossy for binary keys, which only matters to a human reader). */
  key: string;
  problem: string;
}

export interface ContentReport {
  /** Keys compared on the reference side (expired ones left out). */
  keys: number;
  ranges: number;
  differingRanges: number;
  /** Keys that really differ (after the key-by-key examination). */
  differingKeys: number;
  /** The first of them. */
  differences: KeyDifference[];
  durationMs: number;
}

/**
 * `sequential`: the node is read only after the reference side has answered (online verification
 * moves the node to the reference's log offset in between).
 */
export async function compareContent(reference: DatasetSide, node: DatasetSide, sequential = false): Promise<ContentReport> {
  const started = Date.now();
  const cutoff = started + EXPIRY_MARGIN_MS;
  const expected = new ContentDigest(cutoff);
  const actual = new ContentDigest(cutoff);
  if (sequential) {
    await reference(expected);
    await node(actual);
  } else {
    await Promise.all([reference(expected), node(actual)]);
  }
  const differing = new Set<number>();
  for (let r = 0; r < RANGES; r++) if (!sameRange(expected.range(r), actual.range(r))) differing.add(r);
  const report: ContentReport = { keys: expected.totalKeys, ranges: RANGES, differingRanges: differing.size, differingKeys: 0, differences: [], durationMs: 0 };
  const ranges = [...differing];
  for (let i = 0; i < ranges.length; i += RANGES_PER_PASS) {
    const pass = new Set(ranges.slice(i, i + RANGES_PER_PASS));
    const expectedKeys = new ContentDigest(cutoff, pass);
    const actualKeys = new ContentDigest(cutoff, pass);
    await Promise.all([reference(expectedKeys, pass), node(actualKeys, pass)]);
    for (const d of keyDifferences(expectedKeys.collected, actualKeys.collected, cutoff)) {
      report.differingKeys++;
      if (report.differences.length < MAX_REPORTED) report.differences.push(d);
    }
  }
  report.durationMs = Date.now() - started;
  return report;
}

function sameRange(e: RangeDigest, a: RangeDigest): boolean {
  return e.keys === a.keys && e.a === a.a && e.b === a.b && e.volatile === a.volatile && Math.abs(e.expirySumS - a.expirySumS) <= TTL_TOLERANCE_MS / 1000 + PER_KEY_DRIFT_S * e.volatile;
}

/** Key-by-key differences of two collections of the same ranges (a key listed twice: the last wins). */
export function keyDifferences(expected: readonly KeyEntry[], actual: readonly KeyEntry[], cutoff: number): KeyDifference[] {
  const id = (k: KeyEntry): string => `${k.db}\u0000${k.key.toString('latin1')}`;
  const theirs = new Map(actual.map((k) => [id(k), k]));
  const ours = new Map(expected.map((k) => [id(k), k]));
  const out: KeyDifference[] = [];
  const now = Date.now();
  const named = (k: KeyEntry, problem: string): KeyDifference => ({ db: k.db, key: k.key.toString('utf8').slice(0, 200), problem });
  for (const [kid, e] of ours) {
    const a = theirs.get(kid);
    if (!a) {
      // Gone because it expired after the check began: not a difference.
      if (!(e.expireAtMs >= 0 && e.expireAtMs <= now + EXPIRY_MARGIN_MS)) out.push(named(e, `missing on the node (${e.type}${e.expireAtMs >= 0 ? `, expires ${new Date(e.expireAtMs).toISOString()}` : ''})`));
    } else if (e.type !== a.type) {
      out.push(named(e, `type ${a.type} on the node, ${e.type} expected`));
    } else if ((e.expireAtMs >= 0) !== (a.expireAtMs >= 0)) {
      out.push(named(e, e.expireAtMs >= 0 ? `no TTL on the node, expected to expire ${new Date(e.expireAtMs).toISOString()}` : `a TTL on the node (${new Date(a.expireAtMs).toISOString()}), expected none`));
    } else if (e.a !== a.a || e.b !== a.b) {
      out.push(named(e, `value differs (${e.type})`));
    } else if (e.expireAtMs >= 0 && Math.abs(e.expireAtMs - a.expireAtMs) > TTL_TOLERANCE_MS) {
      out.push(named(e, `expires ${new Date(a.expireAtMs).toISOString()} on the node, ${new Date(e.expireAtMs).toISOString()} expected`));
    }
  }
  for (const [kid, a] of theirs) {
    if (ours.has(kid)) continue;
    // Left out of the reference as about to expire, read on the node a moment later.
    if (a.expireAtMs >= 0 && a.expireAtMs <= cutoff + TTL_TOLERANCE_MS) continue;
    out.push(named(a, `on the node but not expected (${a.type})`));
  }
  return out;
}

/** `db 0 'k1': missing on the node; db 0 'k2': value differs (hash); ...` */
export function describeDifferences(report: ContentReport): string {
  const listed = report.differences.map((d) => `db ${d.db} ${JSON.stringify(d.key)}: ${d.problem}`).join('; ');
  return `${report.differingKeys} of ${report.keys} keys differ in ${report.differingRanges} of ${report.ranges} key ranges${listed ? `; first: ${listed}` : ''}`;
}
