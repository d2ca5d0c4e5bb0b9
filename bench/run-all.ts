/**
 * `npm run bench`: runs every benchmark one after another (each is its own process, so a crash or
 * a leaked handle in one cannot skew the next) and stops at the first failure.
 * Extra arguments go to each benchmark, e.g. `npm run bench -- --keys 100000`.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const BENCHMARKS = ['proxy-throughput', 'node-floor', 'snapshot-build', 'full-sync'];

for (const name of BENCHMARKS) {
  console.error(`\n=== ${name} ===`);
  const result = spawnSync(process.execPath, [path.join(__dirname, `${name}.js`), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`${name} failed (${result.signal ?? `exit code ${result.status}`})`);
    process.exit(result.status ?? 1);
  }
}
