/**
 * The replica's staging area on disk: `<dataDir>/replica/staging/<snapshotId>/` holds the copied
 * files, `<dataDir>/replica/progress.json` says how much of each is verified. Names from the
 * wire are untrusted (DESIGN.md invariant 8): they are validated before anything is written.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileSynced } from '../durable-fs';
import { SyncProxyError, toSyncProxyError } from '../errors';
import type { Manifest } from '../source/types';

export function replicaDir(dataDir: string): string {
  return path.join(dataDir, 'replica');
}

export function stagingRoot(dataDir: string): string {
  return path.join(replicaDir(dataDir), 'staging');
}

export function progressPath(dataDir: string): string {
  return path.join(replicaDir(dataDir), 'progress.json');
}

/**
 * A plain file name: no separators, no '..', no NUL, not absolute, and resolving to a direct child
 * of `dir`. Returns the resolved path; throws HOSTILE_FILE_NAME (fatal) otherwise.
 */
export function resolvePlainName(dir: string, name: unknown, what = 'file name'): string {
  const hostile = (why: string): SyncProxyError =>
    new SyncProxyError('HOSTILE_FILE_NAME', `master sent ${what} ${JSON.stringify(String(name)).slice(0, 200)}: ${why}`);
  if (typeof name !== 'string' || name.length === 0) throw hostile('empty or not a string');
  if (name.length > 255) throw hostile('longer than 255 characters');
  if (name.includes('/') || name.includes('\\')) throw hostile('contains a path separator');
  if (name.includes('\0')) throw hostile('contains NUL');
  if (name === '.' || name === '..' || name.includes('..')) throw hostile("contains '..'");
  if (path.isAbsolute(name) || path.win32.isAbsolute(name)) throw hostile('is absolute');
  const base = path.resolve(dir);
  const resolved = path.resolve(base, name);
  if (path.dirname(resolved) !== base) throw hostile('resolves outside the staging directory');
  return resolved;
}

/**
 * Checks a manifest from the wire before it is used for any file system work: plain names (the
 * snapshot id too, it names a directory), no duplicates, sizes that add up.
 */
export function validateManifest(manifest: Manifest, stagingRootDir: string): void {
  const snapshotDir = resolvePlainName(stagingRootDir, manifest.snapshotId, 'snapshot id');
  const seen = new Set<string>();
  let total = 0;
  for (const file of manifest.files) {
    resolvePlainName(snapshotDir, file.name);
    if (file.name.endsWith('.partial')) throw new SyncProxyError('HOSTILE_FILE_NAME', `master sent file name ${file.name}: the .partial suffix is reserved`);
    if (seen.has(file.name)) throw new SyncProxyError('MALFORMED_RESPONSE', `manifest lists ${file.name} twice`);
    seen.add(file.name);
    if (!Number.isSafeInteger(file.size) || file.size < 0) throw new SyncProxyError('MALFORMED_RESPONSE', `manifest size of ${file.name} is ${file.size}`);
    if (!Number.isInteger(file.crc32c) || file.crc32c < 0 || file.crc32c > 0xffffffff) throw new SyncProxyError('MALFORMED_RESPONSE', `manifest crc32c of ${file.name} is ${file.crc32c}`);
    total += file.size;
  }
  if (total !== manifest.totalBytes) throw new SyncProxyError('MALFORMED_RESPONSE', `manifest totalBytes ${manifest.totalBytes} differs from the sum of file sizes ${total}`);
  for (const db of manifest.dbs) {
    if (!Number.isInteger(db.db) || db.db < 0 || !Number.isSafeInteger(db.records) || db.records < 0) throw new SyncProxyError('MALFORMED_RESPONSE', `manifest db entry ${JSON.stringify(db)} is invalid`);
  }
}

export interface FileProgress {
  size: number;
  crc32c: number;
  /** Bytes from 0 that were CRC-checked per chunk and fsynced. */
  verifiedBytes: number;
  /** Whole-file CRC checked, fsynced and renamed to its final name. */
  complete: boolean;
}

export interface ProgressRecord {
  version: 1;
  masterRunId: string;
  snapshotId: string;
  files: Record<string, FileProgress>;
}

/** progress.json, written as tmp + fsync + rename so a crash leaves the old or the new record. */
export class ProgressStore {
  constructor(readonly file: string) {}

  async load(): Promise<ProgressRecord | undefined> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toSyncProxyError(err, 'IO_ERROR', `reading ${this.file}`);
    }
    try {
      const record = JSON.parse(text) as ProgressRecord;
      if (record.version !== 1 || typeof record.snapshotId !== 'string' || typeof record.files !== 'object' || record.files === null) return undefined;
      return record;
    } catch {
      // A torn or foreign file proves nothing: start the copy afresh rather than trust it.
      return undefined;
    }
  }

  async save(record: ProgressRecord): Promise<void> {
    const tmp = `${this.file}.tmp`;
    try {
      await fsp.mkdir(path.dirname(this.file), { recursive: true });
      await writeFileSynced(tmp, JSON.stringify(record));
      await fsp.rename(tmp, this.file);
    } catch (err) {
      throw toSyncProxyError(err, 'IO_ERROR', `writing ${this.file}`);
    }
  }

  async remove(): Promise<void> {
    await fsp.rm(this.file, { force: true });
    await fsp.rm(`${this.file}.tmp`, { force: true });
  }
}
