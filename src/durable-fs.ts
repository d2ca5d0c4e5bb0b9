/**
 * The two fsync steps every durable file in this project needs (snapshot manifests on the master,
 * copied files and progress.json on the replica): a file's contents before it is renamed into
 * place, and the directory after the rename, so neither a crash nor a power loss leaves a name
 * that points at missing bytes.
 */
import { promises as fsp } from 'node:fs';

/** Creates or replaces `file` with `data` and fsyncs it (rename it into place afterwards). */
export async function writeFileSynced(file: string, data: string): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsyncs a directory, making the renames and creations in it durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
