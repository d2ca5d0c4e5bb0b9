/** The write log as a test proxy left it on disk: every entry, with its bytes. */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ENTRY_HEADER_BYTES, decodeEntry } from '../../src/source/log-format';
import type { LogEntry } from '../../src/source/types';
import type { TestProxy } from './proxy-fixture';

/** Every entry of the proxy's log segments, with its bytes on disk. */
export function entriesOnDisk(proxy: Pick<TestProxy, 'dataDir'>): { entry: LogEntry; bytes: Buffer }[] {
  const dir = path.join(proxy.dataDir, 'log');
  const out: { entry: LogEntry; bytes: Buffer }[] = [];
  for (const name of readdirSync(dir).sort()) {
    const data = readFileSync(path.join(dir, name));
    for (let pos = 0; pos < data.length; ) {
      const end = pos + ENTRY_HEADER_BYTES + data.readUInt32BE(pos);
      out.push({ entry: decodeEntry(data, pos, name), bytes: data.subarray(pos, end) });
      pos = end;
    }
  }
  return out;
}
