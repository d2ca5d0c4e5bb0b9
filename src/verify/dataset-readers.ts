/**
 * The two sides of a content proof, each feeding a ContentDigest: the records of snapshot files
 * (the copy the replica verified against the master's checksums, so the master's snapshot byte
 * for byte), and a node's live content read with the snapshot key reader (the same reads, pages
 * and TTL handling the master's snapshot build uses).
 */
import { createReadStream } from 'node:fs';
import type { Logger } from 'pino';
import { PROBE_KEY_PREFIX } from '../backend/node-profile';
import { SyncProxyError } from '../errors';
import { CommandScanner } from '../replication/command-scanner';
import { argsOf, isMarker } from '../replication/load-batch';
import { bulkItems } from '../resp/reply-reader';
import { KeyReader, NodeAddress, WithSink } from '../source/key-reader';
import type { KeyType } from '../source/types';
import { ContentDigest, rangeOf } from './content-digest';

const KEY_TYPES = new Set<string>(['string', 'hash', 'list', 'set', 'zset', 'stream']);
const PROBE_PREFIX = Buffer.from(PROBE_KEY_PREFIX);
/** Key batches read at once from the node (as the snapshot build's pipeline depth). */
const READS_IN_FLIGHT = 4;

/** Feeds every record of `files` (manifest order) into `digest`, then closes it. */
export async function digestSnapshotFiles(files: ReadonlyArray<{ name: string; path: string }>, digest: ContentDigest, signal: AbortSignal): Promise<void> {
  for (const file of files) {
    const scanner = new CommandScanner();
    for await (const chunk of createReadStream(file.path, { highWaterMark: 1024 * 1024, signal }) as AsyncIterable<Buffer>) {
      scanner.feed(chunk);
      while (scanner.next()) {
        const args = argsOf(scanner.data.subarray(scanner.start, scanner.end));
        if (!isMarker(scanner.data, scanner.nameStart, scanner.nameEnd)) {
          digest.command(args);
          continue;
        }
        if (args[0].toString('latin1').toUpperCase() !== 'PSP.KEY') continue; // FILE, PART, EOF, FUNCTIONS (libraries are not keys: not digested)
        const type = args[3]?.toString('latin1');
        if (args.length !== 5 || !KEY_TYPES.has(type)) throw new SyncProxyError('LOAD_FAILED', `${file.name}: malformed PSP.KEY`);
        digest.beginKey(Number(args[1].toString('latin1')), args[2], type as KeyType, Number(args[4].toString('latin1')));
      }
    }
  }
  digest.finish();
}

/**
 * Feeds every key of `dbs` on the node into `digest` (SCAN, then the snapshot key reader), then
 * closes it. With `onlyRanges`, keys of other ranges are not read at all.
 */
export async function digestNode(node: NodeAddress, dbs: readonly number[], digest: ContentDigest, logger: Logger, signal: AbortSignal, onlyRanges?: ReadonlySet<number>): Promise<void> {
  const reader = new KeyReader(node, logger);
  // One batch of records at a time: a record of a big key spans awaits.
  let lock: Promise<unknown> = Promise.resolve();
  const withSink: WithSink = (fn) => {
    const run = lock.then(() => fn(digest));
    lock = run.catch(() => undefined);
    return run;
  };
  try {
    for (const db of dbs) {
      const conn = await reader.connection(db);
      const inFlight: Promise<unknown>[] = [];
      let cursor = '0';
      try {
        do {
          if (signal.aborted) throw signal.reason;
          const reply = await conn.call(['SCAN', cursor, 'COUNT', '1000']);
          const page = Array.isArray(reply) && reply.length === 2 && Buffer.isBuffer(reply[0]) ? bulkItems(reply[1]) : undefined;
          if (!page) throw new SyncProxyError('MALFORMED_RESPONSE', `SCAN of db ${db} answered an unexpected shape`);
          cursor = (reply as Buffer[])[0].toString('latin1');
          const keys = page.filter((k) => !(k.length > PROBE_PREFIX.length && k.subarray(0, PROBE_PREFIX.length).equals(PROBE_PREFIX)) && (!onlyRanges || onlyRanges.has(rangeOf(db, k))));
          if (keys.length === 0) continue;
          inFlight.push(reader.readKeys(db, keys.map((k) => Buffer.from(k)), withSink));
          if (inFlight.length >= READS_IN_FLIGHT) await inFlight.shift();
        } while (cursor !== '0');
      } finally {
        // Every read settles before the reader closes (no rejection left unobserved).
        const results = await Promise.allSettled(inFlight);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      }
    }
  } finally {
    await reader.close();
  }
  digest.finish();
}
