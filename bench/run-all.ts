/**
 * `npm run bench`: runs every benchmark one after another (each is its own process, so a crash or
 * a leaked handle in one cannot skew the next) and stops at the first failure.
 * Extra arguments go to each benchmark, e.g. `npm run bench -- --keys 100000` (pika-full-sync
 * takes a comma-separated list there; one size works for all).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

// The Pika benchmarks last: they need ../shared/pika beside the repo, and pika-full-sync exits
// with code 1 when a replica's key count differs from the master's.
const BENCHMARKS = ['proxy-throughput', 'node-floor', 'snapshot-build', 'full-sync', 'pika-data-path', 'pika-full-sync', 'metrics-overhead'];

for (const name of BENCHMARKS) {
  console.error(`\n=== ${name} ===`);
  const result = spawnSync(process.execPath, [path.join(__dirname, `${name}.js`), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`${name} failed (${result.signal ?? `exit code ${result.status}`})`);
    process.exit(result.status ?? 1);
  }
}
