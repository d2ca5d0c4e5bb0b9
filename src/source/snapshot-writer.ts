/**
 * Writes one snapshot in the format of src/source/types.ts: `part-NNNNNN.resp` files of RESP
 * commands with PSP.* markers, built in `<dir>/<snapshotId>.tmp/` and renamed to
 * `<dir>/<snapshotId>/` only after every file and the manifest are on disk (fsync'd). A crash
 * before the rename leaves only a `.tmp` directory, which is never served.
 *
 * Files roll once they reach `fileSize`, always between two commands; a key record that continues
 * in the next file is resumed with PSP.PART. Callers serialize records (one key at a time).
 */
import { crc32c } from '@node-rs/crc32';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { toSyncProxyError } from '../errors';
import { encodeArgs } from '../resp/request-parser';
import { KeyType, Manifest, ManifestFile, SNAPSHOT_FORMAT_VERSION } from './types';

export interface SnapshotWriterOptions {
  /** `<dataDir>/snapshots` */
  dir: string;
  snapshotId: string;
  fileSize: number;
  logger: Logger;
}

/** Where one record's commands go; implemented by SnapshotWriter. */
export interface RecordSink {
  beginKey(db: number, key: Buffer, type: KeyType, expireAtMs: number): Promise<void>;
  command(args: Buffer[]): Promise<void>;
}

const WRITE_BUFFER = 256 * 1024;
const B = (s: string | number): Buffer => Buffer.from(String(s));

export class SnapshotWriter implements RecordSink {
  readonly buildDir: string;
  readonly finalDir: string;
  private handle: fsp.FileHandle | undefined;
  private fileName = '';
  private fileBytes = 0;
  private fileCrc = 0;
  private fileRecords = 0;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private files: ManifestFile[] = [];
  private recordsByDb = new Map<number, number>();
  private currentKey: { db: number; key: Buffer } | undefined;
  private totalBytes = 0;

  constructor(private readonly options: SnapshotWriterOptions) {
    this.buildDir = path.join(options.dir, `${options.snapshotId}.tmp`);
    this.finalDir = path.join(options.dir, options.snapshotId);
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
    await this.startFile();
  }

  async beginKey(db: number, key: Buffer, type: KeyType, expireAtMs: number): Promise<void> {
    if (this.fileBytes >= this.options.fileSize) await this.roll();
    this.currentKey = { db, key };
    this.fileRecords++;
    this.recordsByDb.set(db, (this.recordsByDb.get(db) ?? 0) + 1);
    await this.put(encodeArgs([B('PSP.KEY'), B(db), key, B(type), B(expireAtMs)]));
  }

  async command(args: Buffer[]): Promise<void> {
    if (this.fileBytes >= this.options.fileSize) {
      await this.roll();
      if (this.currentKey) await this.put(encodeArgs([B('PSP.PART'), B(this.currentKey.db), this.currentKey.key]));
    }
    await this.put(encodeArgs(args));
  }

  /**
   * Closes the last file, writes manifest.json last and renames the build directory into place.
   * `dbs` lists db 0 and every db with records.
   */
  async finish(meta: { logId: string; logOffset: number; createdAtMs: number }): Promise<Manifest> {
    await this.endFile();
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
      const file = path.join(this.buildDir, 'manifest.json');
      const fh = await fsp.open(file, 'w');
      try {
        await fh.writeFile(JSON.stringify(manifest, null, 1));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(this.buildDir, this.finalDir);
      await fsyncDir(this.options.dir);
    });
    return manifest;
  }

  /** Drops the unfinished build (nothing servable remains). */
  async abort(): Promise<void> {
    const fh = this.handle;
    this.handle = undefined;
    await fh?.close().catch(() => undefined);
    await fsp.rm(this.buildDir, { recursive: true, force: true });
  }

  private async startFile(): Promise<void> {
    this.fileName = `part-${String(this.files.length + 1).padStart(6, '0')}.resp`;
    this.handle = await this.io('creating a snapshot file', () => fsp.open(path.join(this.buildDir, this.fileName), 'wx'));
    this.fileBytes = 0;
    this.fileCrc = 0;
    this.fileRecords = 0;
    await this.put(encodeArgs([B('PSP.FILE'), B(SNAPSHOT_FORMAT_VERSION), B(this.options.snapshotId), B(this.fileName)]));
  }

  private async endFile(): Promise<void> {
    await this.put(encodeArgs([B('PSP.EOF'), B(this.fileRecords)]));
    await this.flush();
    const fh = this.handle;
    this.handle = undefined;
    await this.io('closing a snapshot file', async () => {
      await fh?.sync();
      await fh?.close();
    });
    this.files.push({ name: this.fileName, size: this.fileBytes, crc32c: this.fileCrc >>> 0 });
    this.options.logger.debug({ file: this.fileName, size: this.fileBytes, records: this.fileRecords }, 'snapshot file complete');
  }

  private async roll(): Promise<void> {
    await this.endFile();
    await this.startFile();
  }

  private async put(data: Buffer): Promise<void> {
    this.fileCrc = crc32c(data, this.fileCrc);
    this.fileBytes += data.length;
    this.totalBytes += data.length;
    this.buffered.push(data);
    this.bufferedBytes += data.length;
    if (this.bufferedBytes >= WRITE_BUFFER) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.bufferedBytes === 0) return;
    const data = Buffer.concat(this.buffered, this.bufferedBytes);
    this.buffered = [];
    this.bufferedBytes = 0;
    const fh = this.handle;
    await this.io('writing a snapshot file', async () => {
      if (!fh) throw new Error('snapshot file is not open');
      let written = 0;
      while (written < data.length) written += (await fh.write(data, written, data.length - written)).bytesWritten;
    });
  }

  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', what);
    }
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
