/** Small helpers shared by the replication modules. */
import { promises as fsp } from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { SyncProxyError } from '../errors';

const READ_BUFFER_BYTES = 1024 * 1024;

/** CRC32C of a file read in 1 MiB pieces (bounded memory). */
export async function crcOfFile(file: string): Promise<number> {
  const handle = await fsp.open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    let crc = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) return crc;
      crc = crc32c(buffer.subarray(0, bytesRead), crc);
    }
  } finally {
    await handle.close();
  }
}

/** `promise`, or a rejection with the abort reason as soon as `signal` aborts. */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}

/** The error a sync is aborted with (SLAVEOF NO ONE, a new master, stop()). */
export function abortError(why: string): SyncProxyError {
  return new SyncProxyError('SYNC_ABORTED', why);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n}B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)}${units[i]}`;
}
