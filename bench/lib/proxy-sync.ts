/**
 * Timing a proxy's full sync from the outside, for the full-sync benchmarks (full-sync on Redis,
 * pika-full-sync on Pika): SLAVEOF to the replica proxy, then INFO replication polled until
 * sync_confirmed:1, every distinct sync_state recorded with the time it was first seen.
 */
import Redis from 'ioredis';
import { parseInfo, sleep } from './tools';

export const POLL_MS = 100;

export interface Transition {
  state: string;
  atMs: number;
}

export interface ProxySync {
  ms: number;
  transitions: Transition[];
  totalBytes: number;
  info: Record<string, string>;
}

/** Sends SLAVEOF and polls until sync_confirmed:1; records every distinct sync_state. */
export async function timeProxySync(replica: Redis, master: { port: number; host?: string }, timeoutMs: number): Promise<ProxySync> {
  const transitions: Transition[] = [];
  let totalBytes = 0;
  let last: Record<string, string> = {};
  const started = Date.now();
  const reply = await replica.call('SLAVEOF', master.host ?? '127.0.0.1', String(master.port));
  if (reply !== 'OK') throw new Error(`SLAVEOF answered ${String(reply)}`);
  for (;;) {
    last = parseInfo((await replica.call('INFO', 'replication')) as string);
    const now = Date.now() - started;
    const state = last.sync_state ?? '?';
    if (transitions.length === 0 || transitions[transitions.length - 1].state !== state) {
      transitions.push({ state, atMs: now });
      console.error(`${(now / 1000).toFixed(1).padStart(7)} s  ${state}  ${last.master_sync_read_bytes ?? ''}/${last.master_sync_total_bytes ?? ''} bytes`);
    }
    totalBytes = Math.max(totalBytes, Number(last.master_sync_total_bytes ?? 0));
    if (last.sync_confirmed === '1') return { ms: now, transitions, totalBytes, info: last };
    if (state === 'failed') throw new Error(`sync failed: ${last.last_sync_error ?? '(no last_sync_error)'}`);
    if (now > timeoutMs) throw new Error(`sync not confirmed after ${timeoutMs} ms; last INFO: ${JSON.stringify(last)}`);
    await sleep(POLL_MS);
  }
}

/** Observed duration of each state: from its first sighting to the next state's. */
export function phaseDurations(transitions: Transition[], endMs: number): Array<{ state: string; ms: number }> {
  return transitions.map((t, i) => ({ state: t.state, ms: (transitions[i + 1]?.atMs ?? endMs) - t.atMs }));
}

/**
 * Phase timings as the replica reports them in SYNCPROXY STATUS (`phase: <state> start=… end=…
 * duration_ms=N reason=…` lines); summed per state, the pre-SLAVEOF 'none' phase left out.
 */
export function reportedPhases(status: string): Map<string, number> {
  const phases = new Map<string, number>();
  const all = [...status.matchAll(/^phase: (\S+) .*?duration_ms=(\d+) reason=(.*)$/gm)];
  // The status keeps earlier syncs' phases too: only those after the last 'none' count.
  const lastNone = all.map((m) => m[1]).lastIndexOf('none');
  for (const m of all.slice(lastNone + 1)) phases.set(m[1], (phases.get(m[1]) ?? 0) + Number(m[2]));
  return phases;
}

/** The same from `SYNCPROXY STATUS JSON` (its `phases` array); undefined if it has none. */
export function reportedPhasesJson(statusJson: string): Map<string, number> | undefined {
  let phases: Array<{ state: string; durationMs: number }>;
  try {
    phases = (JSON.parse(statusJson) as { phases?: Array<{ state: string; durationMs: number }> }).phases ?? [];
  } catch {
    return undefined;
  }
  const result = new Map<string, number>();
  const lastNone = phases.map((p) => p.state).lastIndexOf('none');
  for (const p of phases.slice(lastNone + 1)) result.set(p.state, (result.get(p.state) ?? 0) + Number(p.durationMs));
  return result;
}
