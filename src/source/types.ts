/**
 * Contracts of the master side (src/source): the write log, snapshots and the coordination
 * between client writes and a running snapshot build. src/server, src/sync and src/replication
 * code against these types only.
 *
 * ## Snapshot file format (format version 1)
 *
 * A snapshot is a directory `<data-dir>/snapshots/<snapshot-id>/` with `manifest.json` and files
 * `part-000001.resp`, `part-000002.resp`, ... Each file is a stream of RESP commands (arrays of
 * bulk strings), exactly what a client would send, so the replica's loader parses it with
 * src/resp's RequestParser. The first argument of a few commands is a marker that the loader
 * interprets and never sends to the node:
 *
 *   PSP.FILE <format-version> <snapshot-id> <file-name>     first command of every file
 *   PSP.KEY <db> <key> <type> <expire-at-ms | -1>             a key record begins
 *   PSP.PART <db> <key>                                       the previous key continues (a big
 *                                                             key split across files)
 *   PSP.EOF <key-records-in-this-file>                        last command of every file
 *   PSP.FUNCTIONS <FUNCTION DUMP payload>                     the node's function libraries, in
 *                                                             the first file before any key
 *                                                             (source/function-libraries.ts)
 *
 * Between markers come ordinary commands that rebuild the key: SET, HMSET, RPUSH, SADD, ZADD,
 * XADD, and a final PEXPIREAT when the key has a TTL (absolute unix milliseconds). A key record
 * starts with PSP.KEY; the loader SELECTs the db and deletes the key before the record's commands
 * (so a record applied twice leaves one copy; a key DEL did not find counts as a distinct key; the
 * loader deletes the keys of consecutive records of one db in one variadic DEL, see
 * src/replication/load-batch.ts). Types are
 * `string`, `hash`, `list`, `set`, `zset`, `stream`.
 *
 * The snapshot equals the node as it was right after write-log offset `logOffset`: replaying the
 * log from `logOffset + 1` on top of it reproduces the master. Files are loaded in manifest order.
 */

export const SNAPSHOT_FORMAT_VERSION = 1;
export const SYNC_PROTOCOL_VERSION = 1;

export type KeyType = 'string' | 'hash' | 'list' | 'set' | 'zset' | 'stream';

export interface ManifestFile {
  name: string;
  size: number;
  /** CRC32C of the whole file (unsigned 32-bit). */
  crc32c: number;
}

export interface ManifestDb {
  db: number;
  /** Number of PSP.KEY records of this db in the snapshot. */
  records: number;
}

export interface Manifest {
  formatVersion: number;
  snapshotId: string;
  logId: string;
  logOffset: number;
  createdAtMs: number;
  files: ManifestFile[];
  dbs: ManifestDb[];
  totalBytes: number;
  /**
   * True while the build still runs: `files` are the files finished so far (written, fsynced,
   * final size and CRC32C), a prefix of the complete list; `dbs` is empty. A replica may copy
   * and load them and ask again (DESIGN.md §5: the copy overlaps the master's build).
   */
  partial?: boolean;
}

/** One write-log entry: the commands the node executed, as they must be replayed. */
export interface LogEntry {
  /** 1, 2, 3, ... within one log id. */
  offset: number;
  db: number;
  /** More than one command: replay atomically (MULTI/EXEC). */
  commands: Buffer[][];
}

/** The write log as the sync service and the data path see it. */
export interface WriteLogView {
  readonly logId: string;
  /** Lowest offset still held; lastOffset + 1 when empty. */
  readonly firstOffset: number;
  /** Highest offset appended; 0 when nothing was appended yet. */
  readonly lastOffset: number;
  /**
   * Entries from `fromOffset` on, waiting for new ones, until `signal` aborts. Throws
   * LOG_OFFSET_GONE when `fromOffset` (or a later position) is no longer held, or when the log
   * was reset to a new log id.
   */
  follow(fromOffset: number, signal: AbortSignal): AsyncIterable<LogEntry>;
}

/** What a snapshot build needs from the data path. */
export interface OrderedPath {
  /**
   * Resolves once every write dispatched before the call has been answered by the node and
   * appended to the log; the value is the log's last offset at that point.
   */
  barrier(): Promise<number>;
}

/**
 * Keys a write touches, as the data path knows them from the command table: a list of keys in
 * one db, or a whole db (FLUSHDB), or every db (FLUSHALL, SWAPDB).
 */
export type WriteScope =
  | { kind: 'keys'; db: number; keys: Buffer[] }
  | { kind: 'db'; db: number }
  | { kind: 'all' };

/**
 * The data path calls this before dispatching any write while a snapshot build may be running.
 * `null`: dispatch now. A promise: dispatch only after it resolves (the build has captured the
 * keys' pre-write state); it rejects when the write must be refused.
 */
export interface WriteGate {
  beforeWrite(scope: WriteScope): Promise<void> | null;
}

export interface SnapshotStoreView {
  /**
   * The manifest of a fresh snapshot, starting a build if there is none (one build shared by
   * every caller). Throws SNAPSHOT_BUILDING (retryable, with progress in details) when the build
   * is still running after `waitMs`, SNAPSHOT_BUILD_FAILED when it failed. With `knownFiles` set
   * the caller accepts a partial manifest: it is answered as soon as the running build has
   * finished more than `knownFiles` files (or completes). With `snapshotId` too, the caller
   * continues that snapshot: its manifest (held, or growing while it builds), never a newer one;
   * SNAPSHOT_NOT_FOUND once it is neither held nor building.
   */
  ensureSnapshot(waitMs: number, knownFiles?: number, snapshotId?: string): Promise<Manifest>;
  /**
   * Bytes of a finished file of a held snapshot or of the running build. Throws
   * SNAPSHOT_NOT_FOUND, FILE_NOT_IN_MANIFEST, HOSTILE_FILE_NAME, INVALID_REQUEST.
   */
  readChunk(snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }>;
  /** The current snapshot id, if any (a replica asking for another one learns it changed). */
  currentSnapshotId(): string | undefined;
  /** A complete snapshot of `logId` at `minOffset` or later (online verification). */
  snapshotAtLeast(logId: string, minOffset: number, waitMs: number): Promise<Manifest>;
  /** Paths of a held snapshot's files in manifest order. */
  snapshotFiles(snapshotId: string): Array<{ name: string; path: string }>;
}
