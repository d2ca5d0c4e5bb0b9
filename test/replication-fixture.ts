/**
 * Master-side stand-ins for the replication tests, built from the real pieces: SnapshotWriter
 * (the real snapshot format), WriteLog, SyncServer (real gRPC), and a small RESP listener that
 * answers SYNCPROXY HELLO the way the lead's proxy does. Not a .test file: imported by them.
 */
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SyncProxyError } from '../src/errors';
import { silentLogger } from '../src/logger';
import { encodeValue, ReplyValue } from '../src/resp/encode';
import { RequestParser, encodeArgs } from '../src/resp/request-parser';
import { SnapshotWriter } from '../src/source/snapshot-writer';
import { KeyType, Manifest, SnapshotStoreView } from '../src/source/types';
import { WriteLog } from '../src/source/write-log';
import { SyncServer } from '../src/sync/sync-server';

export interface TestRecord {
  db: number;
  key: string;
  type: KeyType;
  expireAtMs?: number;
  commands: string[][];
}

export async function tempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Snapshots in a directory; `publish` writes one with the real SnapshotWriter and makes it current. */
export class DirSnapshotStore implements SnapshotStoreView {
  current?: Manifest;
  building = false;
  chunksServed = 0;
  /** Called before each chunk is served (tests switch snapshots or count). */
  onChunk?: (file: string, offset: number) => void | Promise<void>;
  private n = 0;

  constructor(readonly dir: string) {}

  async publish(records: TestRecord[], options: { logId: string; logOffset: number; fileSize?: number; snapshotId?: string }): Promise<Manifest> {
    const snapshotId = options.snapshotId ?? `snap-${Date.now()}-${++this.n}`;
    const writer = new SnapshotWriter({ dir: this.dir, snapshotId, fileSize: options.fileSize ?? 64 * 1024, logger: silentLogger() });
    await writer.open();
    for (const r of records) {
      await writer.beginKey(r.db, Buffer.from(r.key), r.type, r.expireAtMs ?? -1);
      for (const c of r.commands) await writer.command(c.map((a) => Buffer.from(a)));
    }
    this.current = await writer.finish({ logId: options.logId, logOffset: options.logOffset, createdAtMs: Date.now() });
    return this.current;
  }

  async ensureSnapshot(): Promise<Manifest> {
    if (this.building || !this.current) throw new SyncProxyError('SNAPSHOT_BUILDING', 'test store is building', { details: { progress: 'test' } });
    return this.current;
  }

  async snapshotAtLeast(logId: string, minOffset: number): Promise<Manifest> {
    const m = await this.ensureSnapshot();
    if (m.logId !== logId || m.logOffset < minOffset) throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `test store holds ${m.logId}@${m.logOffset}`);
    return m;
  }

  snapshotFiles(snapshotId: string): Array<{ name: string; path: string }> {
    if (!this.current || snapshotId !== this.current.snapshotId) throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot ${snapshotId} not found`);
    return this.current.files.map((f) => ({ name: f.name, path: path.join(this.dir, snapshotId, f.name) }));
  }

  async readChunk(snapshotId: string, file: string, offset: number, length: number): Promise<{ data: Buffer; eof: boolean }> {
    await this.onChunk?.(file, offset);
    if (!this.current || snapshotId !== this.current.snapshotId) throw new SyncProxyError('SNAPSHOT_NOT_FOUND', `snapshot ${snapshotId} not found`);
    const meta = this.current.files.find((f) => f.name === file);
    if (!meta) throw new SyncProxyError('FILE_NOT_IN_MANIFEST', `${file} not in the manifest`);
    const handle = await fsp.open(path.join(this.dir, snapshotId, file), 'r');
    try {
      const data = Buffer.alloc(Math.max(0, Math.min(length, meta.size - offset)));
      const { bytesRead } = await handle.read(data, 0, data.length, offset);
      this.chunksServed++;
      return { data: data.subarray(0, bytesRead), eof: offset + bytesRead >= meta.size };
    } finally {
      await handle.close();
    }
  }

  currentSnapshotId(): string | undefined {
    return this.current?.snapshotId;
  }
}

export interface FakeMasterOptions {
  password?: string;
  runId?: string;
  role?: 'master' | 'replica';
  protocol?: number;
}

/** A master proxy as the replica sees it: HELLO on a RESP port, a real SyncServer, a real WriteLog. */
export class FakeMaster {
  readonly runId: string;
  port = 0;
  syncPort = 0;
  private resp?: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(readonly store: DirSnapshotStore, readonly log: WriteLog, readonly sync: SyncServer, readonly options: FakeMasterOptions, readonly dir: string) {
    this.runId = options.runId ?? 'a'.repeat(40);
  }

  static async start(options: FakeMasterOptions = {}): Promise<FakeMaster> {
    const dir = await tempDir('psp-fake-master-');
    const store = new DirSnapshotStore(path.join(dir, 'snapshots'));
    await fsp.mkdir(store.dir, { recursive: true });
    const log = new WriteLog({ dir: path.join(dir, 'log'), maxBytes: 8 * 1024 * 1024, segmentBytes: 1024 * 1024, logger: silentLogger() });
    await log.open();
    const runId = options.runId ?? 'a'.repeat(40);
    const sync = new SyncServer({ bind: '127.0.0.1', port: 0, password: options.password, store, log, runId, isMaster: () => (options.role ?? 'master') === 'master', logger: silentLogger() });
    const master = new FakeMaster(store, log, sync, options, dir);
    master.syncPort = await sync.start();
    await master.listen();
    return master;
  }

  private async listen(): Promise<void> {
    const server = net.createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      const parser = new RequestParser();
      let authed = !this.options.password;
      socket.on('data', (chunk) => {
        parser.feed(chunk);
        for (let req = parser.next(); req; req = parser.next()) {
          const name = req.args.map((a) => a.toString()).join(' ').toUpperCase();
          if (name.startsWith('AUTH')) {
            authed = req.args[1]?.toString() === this.options.password;
            socket.write(authed ? '+OK\r\n' : '-WRONGPASS invalid username-password pair\r\n');
          } else if (!authed) {
            socket.write('-NOAUTH Authentication required.\r\n');
          } else if (name === 'SYNCPROXY HELLO') {
            const hello: ReplyValue = ['name', 'pika-sync-proxy', 'version', '0.1.0', 'protocol', this.options.protocol ?? 1, 'sync_port', this.syncPort, 'run_id', this.runId, 'role', this.options.role ?? 'master'];
            socket.write(encodeValue(hello));
          } else {
            socket.write(`-ERR unknown command '${req.args[0].toString()}'\r\n`);
          }
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (server.address() as net.AddressInfo).port;
    this.resp = server;
  }

  /** Appends one entry the way the data path does after the node accepted a write. */
  append(db: number, ...commands: string[][]): number {
    return this.log.append(db, commands.map((c) => c.map((a) => Buffer.from(a))));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.resp ? this.resp.close(() => resolve()) : resolve()));
    await this.sync.stop();
    await this.log.close();
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

/** Writes a snapshot file by hand (for malformed cases the real writer never produces). */
export async function writeRawFile(dir: string, name: string, commands: string[][]): Promise<{ name: string; path: string; size: number }> {
  const file = path.join(dir, name);
  const data = Buffer.concat(commands.map((c) => encodeArgs(c)));
  await fsp.writeFile(file, data);
  return { name, path: file, size: data.length };
}

export async function waitFor<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
