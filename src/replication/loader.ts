/**
 * Replaces the replica node's dataset with a copied snapshot: FLUSHALL, then every file in
 * manifest order through RequestParser, markers interpreted (src/source/types.ts format doc),
 * everything else forwarded as raw bytes, every reply checked. Then counts are proven: records per
 * db against the manifest, and the node's live key count per db against the distinct keys loaded
 * (DBSIZE on Redis; SCAN on Pika, whose DBSIZE is not live).
 */
import { createReadStream } from 'node:fs';
import type { Logger } from 'pino';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { redactCommand } from '../logger';
import { decodeReply } from '../resp/decode';
import { FramedReply } from '../resp/reply-framer';
import { CommandEncoder } from '../resp/command-encoder';
import { CommandScanner } from './command-scanner';
import { RequestParser } from '../resp/request-parser';
import { SNAPSHOT_FORMAT_VERSION, type Manifest } from '../source/types';
import { NodeAddress, NodePipeline, ReplyView, errorText, integerOf } from './node-pipeline';

export interface LoaderOptions {
  node: NodeAddress;
  manifest: Manifest;
  /** Final file paths in manifest order (from the copier). */
  files: Array<{ name: string; path: string }>;
  logger: Logger;
  signal: AbortSignal;
  /** Called with the file bytes read so far (for progress). */
  onProgress?: (bytesRead: number) => void;
  maxInFlight?: number;
}

export interface DbLoadResult {
  db: number;
  records: number;
  distinctKeys: number;
  /** Distinct keys loaded with a TTL: they may have expired since. */
  volatileKeys: number;
  nodeKeys: number;
}

export interface LoadResult {
  dbs: DbLoadResult[];
  commands: number;
  nodeKind: 'redis' | 'pika-like';
}

interface DbTally {
  records: number;
  distinct: number;
  volatile: number;
}

export async function loadSnapshot(options: LoaderOptions): Promise<LoadResult> {
  const logger = options.logger.child({ component: 'loader', snapshotId: options.manifest.snapshotId });
  const node = await NodePipeline.connect(options.node, options.signal, options.maxInFlight);
  try {
    const nodeKind = await detectNodeKind(node);
    expectOk(await node.call(['FLUSHALL']), 'FLUSHALL');
    const tallies = new Map<number, DbTally>();
    const state = { db: -1, commands: 0, bytes: 0 };
    for (const file of options.files) {
      await loadFile(node, file, options, tallies, state);
      logger.debug({ file: file.name }, 'file loaded');
    }
    await node.flush();

    const manifestDbs = new Map(options.manifest.dbs.map((d) => [d.db, d.records]));
    for (const [db, tally] of tallies) {
      if (!manifestDbs.has(db) && tally.records > 0) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} records loaded, the manifest lists none`);
    }
    const results: DbLoadResult[] = [];
    for (const [db, expected] of manifestDbs) {
      const tally = tallies.get(db) ?? { records: 0, distinct: 0, volatile: 0 };
      if (tally.records !== expected) throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: ${tally.records} key records loaded, the manifest says ${expected}`);
      const nodeKeys = await countKeys(node, db, nodeKind);
      const low = tally.distinct - tally.volatile;
      if (nodeKeys < low || nodeKeys > tally.distinct) {
        throw new SyncProxyError('COUNT_MISMATCH', `db ${db}: the node holds ${nodeKeys} keys after the load, expected ${low === tally.distinct ? low : `${low}..${tally.distinct}`} (${tally.distinct} distinct keys loaded, ${tally.volatile} with a TTL)`);
      }
      results.push({ db, records: tally.records, distinctKeys: tally.distinct, volatileKeys: tally.volatile, nodeKeys });
    }
    logger.info({ dbs: results, commands: state.commands }, 'snapshot loaded and counts verified');
    return { dbs: results, commands: state.commands, nodeKind };
  } catch (err) {
    throw toSyncProxyError(err, 'LOAD_FAILED', 'loading the snapshot');
  } finally {
    node.close();
  }
}

/**
 * One chunk's worth of node commands: spans of the file forwarded as they are (consecutive
 * commands merged into one span), SELECT/DEL made by the loader, and what to check in each reply.
 * Sent with one `sendMany`: no promise, closure or copy per command.
 */
class LoadBatch {
  readonly parts: Buffer[] = [];
  count = 0;
  private readonly kinds: number[] = [];
  private readonly refs: unknown[] = [];
  private readonly made = new CommandEncoder();
  private span?: Buffer;
  /** The buffer of the forwarded commands (the scanner's buffer does not change within a chunk). */
  private forwardedFrom?: Buffer;
  private spanStart = 0;
  private spanEnd = 0;

  constructor(private readonly fileName: string) {}

  /** Forwards `data[start, end)`, one complete command. */
  forward(data: Buffer, start: number, end: number): void {
    if (this.made.length > 0) this.parts.push(...this.made.takeChunks());
    if (this.span === data && start === this.spanEnd) {
      this.spanEnd = end;
    } else {
      this.closeSpan();
      this.span = data;
      this.spanStart = start;
      this.spanEnd = end;
    }
    this.expect(FORWARDED, start);
    this.forwardedFrom = data;
  }

  select(db: number): void {
    this.closeSpan();
    this.made.command(['SELECT', String(db)]);
    this.expect(SELECT, db);
  }

  del(key: Buffer, tally: DbTally, volatile: boolean): void {
    this.closeSpan();
    this.made.command([DEL, key]);
    this.expect(volatile ? DEL_VOLATILE : DEL_PLAIN, tally);
  }

  /** The chunks to send, in order (call once, after the last command). */
  finish(): Buffer[] {
    this.closeSpan();
    if (this.made.length > 0) this.parts.push(...this.made.takeChunks());
    return this.parts;
  }

  readonly check = (reply: ReplyView, index: number): void => {
    const kind = this.kinds[index];
    const ref = this.refs[index];
    if (kind === FORWARDED) {
      if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `the node refused "${describe(this.forwardedFrom!.subarray(ref as number))}" from ${this.fileName}: ${errorText(reply)}`);
    } else if (kind === SELECT) {
      if (reply.type !== 43) throw new SyncProxyError('LOAD_FAILED', `SELECT ${ref as number} failed on the node: ${errorText(reply)}`);
    } else {
      const n = reply.integer();
      if (n === undefined) throw new SyncProxyError('LOAD_FAILED', `DEL failed on the node: ${errorText(reply)}`);
      // 0: the key did not exist before this record, so it is a distinct key.
      if (n === 0) {
        const tally = ref as DbTally;
        tally.distinct++;
        if (kind === DEL_VOLATILE) tally.volatile++;
      }
    }
  };

  private expect(kind: number, ref: unknown): void {
    this.kinds.push(kind);
    this.refs.push(ref);
    this.count++;
  }

  private closeSpan(): void {
    if (!this.span) return;
    this.parts.push(this.span.subarray(this.spanStart, this.spanEnd));
    this.span = undefined;
  }
}

const FORWARDED = 0;
const SELECT = 1;
const DEL_PLAIN = 2;
const DEL_VOLATILE = 3;
const DEL = Buffer.from('DEL');

/** The arguments of a complete, already validated multibulk command (markers only). */
function argsOf(raw: Buffer): Buffer[] {
  const args: Buffer[] = [];
  let pos = 1;
  while (raw[pos] !== 13) pos++;
  pos += 2;
  while (pos < raw.length) {
    let len = 0;
    let i = pos + 1;
    for (; raw[i] !== 13; i++) len = len * 10 + raw[i] - 48;
    args.push(raw.subarray(i + 2, i + 2 + len));
    pos = i + 2 + len + 2;
  }
  return args;
}

const PSP_KEY = Buffer.from('PSP.KEY');
const MINUS_ONE = Buffer.from('-1');

/** A marker's name in upper case (the common spelling without a string conversion). */
function markerName(arg: Buffer): string {
  return arg.equals(PSP_KEY) ? 'PSP.KEY' : arg.toString('latin1').toUpperCase();
}

/** The redacted text of one raw command (only for error messages). */
function describe(raw: Buffer): string {
  const parser = new RequestParser();
  parser.feed(raw);
  const request = parser.next();
  return request ? redactCommand(request.args) : '?';
}

/** A name `data[start, end)` beginning "PSP." in any case (markers are matched case-insensitively). */
function isMarker(data: Buffer, start: number, end: number): boolean {
  return end - start > 4 && (data[start] | 0x20) === 112 && (data[start + 1] | 0x20) === 115 && (data[start + 2] | 0x20) === 112 && data[start + 3] === 46;
}

async function loadFile(node: NodePipeline, file: { name: string; path: string }, options: LoaderOptions, tallies: Map<number, DbTally>, state: { db: number; commands: number; bytes: number }): Promise<void> {
  const scanner = new CommandScanner();
  const failLoad = (why: string): SyncProxyError => new SyncProxyError('LOAD_FAILED', `${file.name}: ${why}`);
  let sawHeader = false;
  let sawEof = false;
  let recordsInFile = 0;
  let inRecord = false;

  const parseDb = (arg: Buffer, marker: string): number => {
    const db = arg.length === 1 && arg[0] >= 48 && arg[0] <= 57 ? arg[0] - 48 : Number(arg.toString('latin1'));
    if (!Number.isInteger(db) || db < 0) throw failLoad(`${marker} names db ${arg.toString('latin1')}`);
    return db;
  };
  const nextCommand = (): boolean => {
    try {
      return scanner.next();
    } catch (err) {
      throw failLoad((err as Error).message);
    }
  };

  const stream = createReadStream(file.path, { highWaterMark: 1024 * 1024, signal: options.signal });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      state.bytes += chunk.length;
      options.onProgress?.(state.bytes);
      scanner.feed(chunk);
      const batch = new LoadBatch(file.name);
      const select = (db: number): void => {
        if (db === state.db) return;
        batch.select(db);
        state.db = db;
      };
      // Only markers are taken apart; a forwarded command stays the bytes it was.
      while (nextCommand()) {
        const data = scanner.data;
        const argc = scanner.argc;
        if (sawEof) throw failLoad('commands after PSP.EOF');
        if (!isMarker(data, scanner.nameStart, scanner.nameEnd)) {
          if (!sawHeader) throw failLoad('does not begin with PSP.FILE');
          if (!inRecord) throw failLoad(`${data.toString('latin1', scanner.nameStart, scanner.nameEnd).toUpperCase()} outside a key record`);
          state.commands++;
          batch.forward(data, scanner.start, scanner.end);
          continue;
        }
        const args = argsOf(data.subarray(scanner.start, scanner.end));
        const name = markerName(args[0]);
        if (!sawHeader) {
          if (name !== 'PSP.FILE' || argc !== 4) throw failLoad('does not begin with PSP.FILE');
          const [version, snapshotId, fileName] = args.slice(1).map((a) => a.toString('utf8'));
          if (Number(version) !== SNAPSHOT_FORMAT_VERSION) throw failLoad(`format version ${version}, this proxy reads ${SNAPSHOT_FORMAT_VERSION}`);
          if (snapshotId !== options.manifest.snapshotId) throw failLoad(`PSP.FILE names snapshot ${snapshotId}, loading ${options.manifest.snapshotId}`);
          if (fileName !== file.name) throw failLoad(`PSP.FILE names file ${fileName}`);
          sawHeader = true;
        } else if (name === 'PSP.KEY') {
          if (argc !== 5) throw failLoad(`PSP.KEY with ${argc - 1} arguments`);
          const db = parseDb(args[1], 'PSP.KEY');
          const volatile = !args[4].equals(MINUS_ONE);
          let tally = tallies.get(db);
          if (!tally) tallies.set(db, (tally = { records: 0, distinct: 0, volatile: 0 }));
          tally.records++;
          recordsInFile++;
          inRecord = true;
          select(db);
          batch.del(args[2], tally, volatile);
        } else if (name === 'PSP.PART') {
          if (argc !== 3) throw failLoad(`PSP.PART with ${argc - 1} arguments`);
          select(parseDb(args[1], 'PSP.PART'));
          inRecord = true;
        } else if (name === 'PSP.EOF') {
          const n = argc === 2 ? Number(args[1].toString('latin1')) : NaN;
          if (n !== recordsInFile) throw failLoad(`PSP.EOF says ${args[1]?.toString('latin1')} key records, the file held ${recordsInFile}`);
          sawEof = true;
        } else {
          throw failLoad(`unknown marker ${name}`);
        }
      }
      const parts = batch.finish();
      await node.sendMany(parts, batch.count, batch.check);
    }
  } catch (err) {
    if (err instanceof SyncProxyError) throw err;
    if (options.signal.aborted) throw options.signal.reason;
    throw toSyncProxyError(err, 'IO_ERROR', `reading ${file.name}`);
  }
  if (scanner.bufferedBytes > 0) throw failLoad('ends inside a command');
  if (!sawHeader) throw failLoad('is empty');
  if (!sawEof) throw failLoad('has no PSP.EOF (truncated)');
}

function expectOk(reply: FramedReply, what: string): void {
  if (reply.type !== 43) throw new SyncProxyError('LOAD_FAILED', `${what} failed on the node: ${errorText(reply)}`);
}

/** Redis when INFO server has redis_version and no pika_version; anything else is treated like Pika. */
export async function detectNodeKind(node: NodePipeline): Promise<'redis' | 'pika-like'> {
  const reply = await node.call(['INFO', 'server']);
  if (reply.type === 45) return 'pika-like';
  const text = reply.raw.toString('utf8');
  return /\r?\nredis_version:/.test(`\n${text}`) && !/pika_version:/.test(text) ? 'redis' : 'pika-like';
}

/** Live key count of one db: DBSIZE on Redis, a full SCAN on Pika (its DBSIZE is not live). */
export async function countKeys(node: NodePipeline, db: number, kind: 'redis' | 'pika-like'): Promise<number> {
  expectOk(await node.call(['SELECT', String(db)]), `SELECT ${db}`);
  if (kind === 'redis') {
    const reply = await node.call(['DBSIZE']);
    const n = integerOf(reply);
    if (n === undefined) throw new SyncProxyError('LOAD_FAILED', `DBSIZE failed on the node: ${errorText(reply)}`);
    return n;
  }
  let cursor = '0';
  let count = 0;
  do {
    const reply = await node.call(['SCAN', cursor, 'COUNT', '1000']);
    if (reply.type === 45) throw new SyncProxyError('LOAD_FAILED', `SCAN failed on the node: ${errorText(reply)}`);
    const decoded = decodeReply(reply.raw);
    if (!Array.isArray(decoded) || decoded.length !== 2 || !Buffer.isBuffer(decoded[0]) || !Array.isArray(decoded[1])) throw new SyncProxyError('MALFORMED_RESPONSE', 'SCAN answered an unexpected shape');
    cursor = decoded[0].toString('latin1');
    count += decoded[1].length;
  } while (cursor !== '0');
  return count;
}
