/**
 * Which lane a command takes (pure: the lanes' loads are read, nothing is sent). The rules and
 * why: README "Lanes"; the sending: ordered-path.ts.
 */
import type { WriteScope } from '../source/types';
import { Lane, laneOfKey } from './lanes';

/** laneOfScope's answer for a write that spans lanes: it runs exclusive (lanes.ts `exclusive`). */
export const SPANS = -3;
/** Quick reads in flight on a lane before the next reads spill over to the next lane. */
const QUICK_READS_PER_LANE = 1024;

/**
 * The lane of a read from a client with nothing on its way. Quick reads fill lane 0 first and
 * spill over to the next lanes only past QUICK_READS_PER_LANE in flight: one connection carries
 * them in few large batches (fewer syscalls for the proxy and the node; spread thin over 8 lanes
 * they lost ~20-30% of GET throughput on Pika, bench/RESULTS.md "lanes"). Bulky reads go to lanes
 * 1…N-1, by the client's home, so a quick read never waits behind a long LRANGE or HGETALL.
 */
export function readLane(lanes: readonly Lane[], home: number, bulky: boolean): number {
  const n = lanes.length;
  if (n === 1) return 0;
  if (bulky) return 1 + (home % (n - 1));
  for (let i = 0; i < n; i++) if (lanes[i].load < QUICK_READS_PER_LANE) return i;
  let best = 0;
  for (let i = 1; i < n; i++) if (lanes[i].load < lanes[best].load) best = i;
  return best;
}

/** The one lane all of the scope's keys hash to, or SPANS. */
export function laneOfScope(lanes: number, scope: WriteScope): number {
  if (lanes === 1) return 0;
  if (scope.kind !== 'keys' || scope.keys.length === 0) return SPANS;
  const first = laneOfKey(scope.keys[0], lanes);
  for (let i = 1; i < scope.keys.length; i++) if (laneOfKey(scope.keys[i], lanes) !== first) return SPANS;
  return first;
}

/** The lanes a spanning write holds: its keys' lanes, or every lane for a db or all dbs. */
export function lanesOf(lanes: readonly Lane[], scope: WriteScope): readonly Lane[] {
  if (scope.kind !== 'keys' || scope.keys.length === 0) return lanes;
  const indexes = new Set(scope.keys.map((k) => laneOfKey(k, lanes.length)));
  return lanes.filter((lane) => indexes.has(lane.index));
}

/**
 * The lane a spanning write runs on: its first key's (a blocking move's source: the type read
 * right behind the move stays in order with every other write to that key), else lane 0.
 */
export function carrierOf(lanes: number, scope: WriteScope): number {
  return scope.kind === 'keys' && scope.keys.length > 0 ? laneOfKey(scope.keys[0], lanes) : 0;
}
