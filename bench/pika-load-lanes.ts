/**
 * The replica's snapshot load alone into real Pika 4.0.1, by number of load lanes
 * (--load-connections): no master, no copy, no proof by content — what the lanes change in the
 * write path that bounds a full sync (bench/pika-full-sync.ts runs the whole thing).
 *
 *  1. A snapshot of N mixed keys (40% strings, 15% each hash, list, set, zset of 4 elements,
 *     every 7th key with a TTL) is written once by the real SnapshotWriter (16 MiB files).
 *  2. Per lane count (--lanes, e.g. 1,2,4,8) and round: a fresh empty Pika, then loadSnapshot
 *     (FLUSHALL, every file, every reply checked, counts by SCAN) timed; Pika's CPU seconds and
 *     this process's (the loader's) from /proc; Pika stopped.
 *
 * Reproduce:  npm run build && node dist/bench/pika-load-lanes.js [--keys 300000] [--lanes 1,2,4,8] [--rounds 1]
 * Needs: ../shared/pika/start-pika beside the repo. Writes bench/results/pika-load-lanes.md.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../src/logger';
import { loadSnapshot } from '../src/replication/loader';
import { SnapshotWriter } from '../src/source/snapshot-writer';
import { PikaNode, requirePika } from './lib/pika';
import { busyMachineWarning, environmentLine, markdownTable, numericFlag, readCpuSeconds, writeResult } from './lib/tools';

const TYPES = ['string', 'string', 'hash', 'list', 'set', 'zset', 'string', 'string', 'hash', 'list', 'set', 'zset', 'string', 'string', 'hash', 'list', 'set', 'zset', 'string', 'string'] as const;

/** Writes `keys` mixed keys as a snapshot in `dir`; returns its manifest and file paths. */
async function writeSnapshot(dir: string, keys: number) {
  const snapshotId = `bench-load-${keys}`;
  const writer = new SnapshotWriter({ dir, snapshotId, fileSize: 16 * 1024 * 1024, logger: silentLogger() });
  await writer.open();
  const expireAt = Date.now() + 2 * 86_400_000;
  for (let i = 0; i < keys; i++) {
    const type = TYPES[i % TYPES.length];
    const key = Buffer.from(`key:${i}`);
    const ttl = i % 7 === 0;
    await writer.beginKey(0, key, type, ttl ? expireAt : -1);
    const v = (n: number): string => `value-${i}-${n}-${'x'.repeat(20)}`;
    if (type === 'string') await writer.command(['SET', key, v(0)].map((a) => Buffer.from(a)));
    else if (type === 'hash') await writer.command(['HMSET', key, 'f0', v(0), 'f1', v(1), 'f2', v(2), 'f3', v(3)].map((a) => Buffer.from(a)));
    else if (type === 'list') await writer.command(['RPUSH', key, v(0), v(1), v(2), v(3)].map((a) => Buffer.from(a)));
    else if (type === 'set') await writer.command(['SADD', key, v(0), v(1), v(2), v(3)].map((a) => Buffer.from(a)));
    else await writer.command(['ZADD', key, '1', v(0), '2', v(1), '3', v(2), '4', v(3)].map((a) => Buffer.from(a)));
    if (ttl) await writer.command(['PEXPIREAT', key, String(expireAt)].map((a) => Buffer.from(a)));
  }
  const manifest = await writer.finish({ logId: 'bench', logOffset: 0, createdAtMs: Date.now() });
  return { manifest, files: manifest.files.map((f) => ({ name: f.name, path: path.join(dir, snapshotId, f.name) })) };
}

async function main(): Promise<void> {
  requirePika();
  const keys = numericFlag('keys', 300_000);
  const rounds = numericFlag('rounds', 1);
  const lanesArg = process.argv.indexOf('--lanes');
  const laneCounts = (lanesArg > 0 ? process.argv[lanesArg + 1] : '1,2,4,8').split(',').map(Number);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'psp-bench-load-'));
  const rows: Array<Array<string | number>> = [];
  try {
    const { manifest, files } = await writeSnapshot(dir, keys);
    const mib = manifest.totalBytes / 1024 / 1024;
    console.log(`snapshot: ${keys} keys, ${files.length} files, ${mib.toFixed(1)} MiB`);
    for (let round = 1; round <= rounds; round++) {
      for (const lanes of laneCounts) {
        const pika = await PikaNode.start();
        try {
          const pikaCpu = readCpuSeconds(pika.pid!) ?? 0;
          const ownCpu = process.cpuUsage();
          const started = Date.now();
          const result = await loadSnapshot({ node: { host: pika.host, port: pika.port }, manifest, files, logger: silentLogger(), signal: new AbortController().signal, connections: lanes });
          const seconds = (Date.now() - started) / 1000;
          const pikaUsed = (readCpuSeconds(pika.pid!) ?? Number.NaN) - pikaCpu;
          const own = process.cpuUsage(ownCpu);
          const loaderUsed = (own.user + own.system) / 1e6;
          console.log(`round ${round}, ${lanes} lane(s): ${seconds.toFixed(2)} s, ${Math.round(keys / seconds)} keys/s, Pika CPU ${pikaUsed.toFixed(2)} s, loader CPU ${loaderUsed.toFixed(2)} s, node keys ${result.dbs[0]?.nodeKeys}`);
          rows.push([round, result.connections, `${seconds.toFixed(2)} s`, Math.round(keys / seconds), `${pikaUsed.toFixed(2)} s`, `${loaderUsed.toFixed(2)} s`, result.dbs[0]?.nodeKeys ?? 0]);
        } finally {
          await pika.stop();
        }
      }
    }
    const reproduce = `npm run build && node dist/bench/pika-load-lanes.js --keys ${keys} --lanes ${laneCounts.join(',')} --rounds ${rounds}`;
    const text = [
      '# pika-load-lanes', '', busyMachineWarning(), `Environment: ${environmentLine()}.`, '',
      `The snapshot load alone (loadSnapshot: FLUSHALL, ${files.length} files of ${mib.toFixed(1)} MiB, every reply checked, counts by SCAN) into a fresh Pika 4.0.1, ${keys} mixed keys.`, '',
      markdownTable(['round', 'load lanes', 'load time', 'keys/s', 'Pika CPU', 'loader CPU', 'keys on Pika'], rows), '',
      `Reproduce: \`${reproduce}\``,
    ].join('\n');
    console.log(`written to ${writeResult('pika-load-lanes', text)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
