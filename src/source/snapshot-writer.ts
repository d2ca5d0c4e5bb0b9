/**
 * Writes one snapshot in the format of src/source/types.ts: `part-NNNNNN.resp` files of RESP
 * commands with PSP.* markers, built in `<dir>/<snapshotId>.tmp/` and renamed to
 * `<dir>/<snapshotId>/` only after every file and the manifest are on disk (fsync'd). A crash
 * before the rename leaves only a `.tmp` directory, which is never served.
 *
 * Files roll once they reach `fileSize`, always between two commands; a key record that continues
 * in the next file is resumed with PSP.PART. Callers serialize records (one key at a time).
 *
 * Why appends are synchronous: the key reader produces hundreds of thousands of small records per
 * second; a promise per record and a small buffer per argument cost more than the I/O. Records
 * are encoded straight into large blocks (CommandEncoder), the CRC32C of a file is computed per
 * block, and a background flusher writes the blocks with few large writes, opening, fsyncing and
 * closing files in order (./file-flusher.ts). Memory stays bounded because writers
 * `await drain()` (the key reader does it after every batch).
 */
import { crc32c } from '@node-rs/crc32';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { fsyncDir, writeFileSynced } from '../durable-fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import { CommandEncoder } from '../resp/command-encoder';
import { FileFlusher } from './file-flusher';
import { KeyType, Manifest, ManifestFile, SNAPSHOT_FORMAT_VERSION } from './types';

export interface SnapshotWriterOptions {
  /** `<dir>/snapshots` */
  dir: string;
  snapshotId: string;
  fileSize: number;
  logger: Logger;
  /** Called each time one more file is finished on disk. */
  onFileDone?: () => void;
}

/** Where one record's commands go; implemented by SnapshotWriter (appends are synchronous). */
export interface RecordSink {
  beginKey(db: number, key: Buffer, type: KeyType, expireAtMs: number): void;
  command(args: ReadonlyArray<Buffer | string>): void;
  /**
   * `name key items[from..to)`, with each (a, b) pair written as (b, a) when `swapPairs` (ZSCAN
   * and ZRANGE give member, score; ZADD wants score, member).
   */
  elements(name: Buffer, key: Buffer, items: readonly Buffer[], from: number, to: number, swapPairs: boolean): void;
  /** `name key` followed by `count` bulks already encoded in `encoded` (copied in one piece). */
  encodedElements(name: Buffer, key: Buffer, encoded: Buffer, count: number): void;
}

/** Blocks are handed to the flusher at this size. */
const HAND_OFF = 1024 * 1024;

const PSP_KEY = Buffer.from('PSP.KEY');
const PSP_FUNCTIONS = Buffer.from('PSP.FUNCTIONS');
const PSP_PART = Buffer.from('PSP.PART');


export class SnapshotWriter implements RecordSink {
  readonly buildDir: string;
  readonly finalDir: string;
  private readonly encoder = new CommandEncoder();
  private fileName = '';
  private fileBytes = 0;
  private fileCrc = 0;
  private fileRecords = 0;
  /** Bytes of the current file already handed to the flusher (covered by fileCrc). */
  private fileHanded = 0;
  private files: ManifestFile[] = [];
  /** How many of `files` are fsynced and closed: the prefix a partial manifest lists. */
  private filesOnDisk = 0;
  private recordsByDb = new Map<number, number>();
  private currentKey: { db: number; key: Buffer } | undefined;
  private totalBytes = 0;

  private readonly flusher: FileFlusher;

  constructor(private readonly options: SnapshotWriterOptions) {
    this.buildDir = path.join(options.dir, `${options.snapshotId}.tmp`);
    this.finalDir = path.join(options.dir, options.snapshotId);
    this.flusher = new FileFlusher(this.buildDir, options.logger, (name) => this.fileOnDisk(name));
  }

  /** The finished files so far (fsynced, final size and CRC32C), in manifest order: a new array. */
  get finishedFiles(): ManifestFile[] {
    return this.files.slice(0, this.filesOnDisk);
  }

  /** Bytes written so far (all files, buffered included). */
  get bytes(): number {
    return this.totalBytes;
  }

  get records(): number {
    let n = 0;
    for (const c of this.recordsByDb.values()) n += c;
    return n;
  }

  async open(): Promise<void> {
    await this.io('creating the snapshot build directory', async () => {
      await fsp.rm(this.buildDir, { recursive: true, force: true });
      await fsp.mkdir(this.buildDir, { recursive: true });
    });
    this.startFile();
  }

  beginKey(db: number, key: Buffer, type: KeyType, expireAtMs: number): void {
    this.check();
    if (this.fileBytes >= this.options.fileSize) this.roll();
    this.currentKey = { db, key };
    this.fileRecords++;
    this.recordsByDb.set(db, (this.recordsByDb.get(db) ?? 0) + 1);
    const e = this.encoder;
    const before = e.length;
    e.arrayHeader(5);
    e.bulk(PSP_KEY);
    e.bulkInteger(db);
    e.bulk(key);
    e.bulk(type);
    e.bulkInteger(expireAtMs);
    this.appended(before);
  }

  /**
   * The node's function libraries (FUNCTION DUMP's payload), written before any key record: the
   * loader restores them first with `FUNCTION RESTORE <payload> FLUSH` (function-libraries.ts).
   */
  functions(payload: Buffer): void {
    const before = this.beforeCommand();
    this.encoder.command([PSP_FUNCTIONS, payload]);
    this.appended(before);
  }

  command(args: ReadonlyArray<Buffer | string>): void {
    const before = this.beforeCommand();
    this.encoder.command(args);
    this.appended(before);
  }

  elements(name: Buffer, key: Buffer, items: readonly Buffer[], from: number, to: number, swapPairs: boolean): void {
    const before = this.beforeCommand();
    const e = this.encoder;
    e.arrayHeader(2 + to - from);
    e.bulk(name);
    e.bulk(key);
    if (swapPairs) {
      for (let i = from; i + 1 < to; i += 2) {
        e.bulk(items[i + 1]);
        e.bulk(items[i]);
      }
    } else {
      for (let i = from; i < to; i++) e.bulk(items[i]);
    }
    this.appended(before);
  }

  encodedElements(name: Buffer, key: Buffer, encoded: Buffer, count: number): void {
    const before = this.beforeCommand();
    const e = this.encoder;
    e.arrayHeader(2 + count);
    e.bulk(name);
    e.bulk(key);
    e.raw(encoded);
    this.appended(before);
  }

  /** Waits while too much waits for the disk; rejects when writing failed. */
  async drain(): Promise<void> {
    await this.flusher.drain();
    this.check();
  }

  /**
   * Closes the last file, writes manifest.json last and renames the build directory into place.
   * `dbs` lists db 0 and every db with records.
   */
  async finish(meta: { logId: string; logOffset: number; createdAtMs: number }): Promise<Manifest> {
    this.check();
    this.endFile();
    await this.flusher.idle();
    this.check();
    const dbs = [...new Set([0, ...this.recordsByDb.keys()])]
      .sort((a, b) => a - b)
      .map((db) => ({ db, records: this.recordsByDb.get(db) ?? 0 }));
    const manifest: Manifest = {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      snapshotId: this.options.snapshotId,
      logId: meta.logId,
      logOffset: meta.logOffset,
      createdAtMs: meta.createdAtMs,
      files: this.files,
      dbs,
      totalBytes: this.files.reduce((s, f) => s + f.size, 0),
    };
    await this.io('writing the snapshot manifest', async () => {
      await writeFileSynced(path.join(this.buildDir, 'manifest.json'), JSON.stringify(manifest, null, 1));
      await fsp.rename(this.buildDir, this.finalDir);
      await fsyncDir(this.options.dir);
    });
    return manifest;
  }

  private fileOnDisk(name: string): void {
    // The flusher closes files in the order they were ended.
    if (this.files[this.filesOnDisk]?.name !== name) throw new SyncProxyError('INTERNAL', `snapshot file ${name} closed out of order`);
    this.filesOnDisk++;
    this.options.onFileDone?.();
  }

  /** Drops the unfinished build (nothing servable remains). */
  async abort(): Promise<void> {
    await this.flusher.abort();
    await fsp.rm(this.buildDir, { recursive: true, force: true });
  }

  /** Rolls to the next file when the current one is full (PSP.PART resumes the open record). */
  private beforeCommand(): number {
    this.check();
    if (this.fileBytes >= this.options.fileSize) {
      this.roll();
      if (this.currentKey) {
        const before = this.encoder.length;
        this.encoder.command([PSP_PART, String(this.currentKey.db), this.currentKey.key]);
        this.appended(before);
      }
    }
    return this.encoder.length;
  }

  private appended(before: number): void {
    const n = this.encoder.length - before;
    this.fileBytes += n;
    this.totalBytes += n;
    if (this.encoder.length >= HAND_OFF) this.handOff();
  }

  private startFile(): void {
    this.fileName = `part-${String(this.files.length + 1).padStart(6, '0')}.resp`;
    this.fileBytes = 0;
    this.fileCrc = 0;
    this.fileHanded = 0;
    this.fileRecords = 0;
    this.flusher.open(this.fileName);
    const before = this.encoder.length;
    this.encoder.command(['PSP.FILE', String(SNAPSHOT_FORMAT_VERSION), this.options.snapshotId, this.fileName]);
    this.appended(before);
  }

  private endFile(): void {
    const before = this.encoder.length;
    this.encoder.command(['PSP.EOF', String(this.fileRecords)]);
    this.appended(before);
    this.handOff();
    if (this.fileHanded !== this.fileBytes) throw new SyncProxyError('INTERNAL', `snapshot writer lost track of ${this.fileName}'s size`);
    this.files.push({ name: this.fileName, size: this.fileBytes, crc32c: this.fileCrc >>> 0 });
    this.flusher.close(this.fileName, this.fileBytes, this.fileRecords);
  }

  private roll(): void {
    this.endFile();
    this.startFile();
  }

  /** Hands the encoded bytes of the current file to the flusher (CRC32C per chunk). */
  private handOff(): void {
    const chunks = this.encoder.takeChunks();
    if (chunks.length === 0) return;
    let bytes = 0;
    for (const c of chunks) {
      this.fileCrc = crc32c(c, this.fileCrc);
      bytes += c.length;
    }
    this.fileHanded += bytes;
    this.flusher.write(chunks, bytes);
  }

  private check(): void {
    const failure = this.flusher.failure;
    if (failure) throw failure;
  }

  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', what);
    }
  }
}
