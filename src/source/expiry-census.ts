/**
 * Which databases hold no key with a TTL, as the node counts them at one instant: the snapshot
 * builder asks right after its barrier (before any write is let through the gate), and the key
 * reader leaves PTTL out of the probes in those databases.
 *
 * Only a node whose INFO keyspace `expires=` is an exact, live count is trusted: Redis and Valkey
 * keep it as the size of each db's expires dictionary. Pika, Kvrocks and Dragonfly report
 * estimates or differently shaped sections, so on them (or when INFO is refused) every key gets
 * its PTTL, as before.
 */
import { NodeErrorReply, Reply } from '../resp/reply-reader';
import type { ReaderConnection } from './reader-connection';

/** Servers that announce redis_version too but whose keyspace counts are not live and exact. */
const UNTRUSTED_SERVERS = /^(pika_version|kvrocks_version|dragonfly_version):/m;

export async function dbsWithoutExpiries(conn: ReaderConnection, dbCount: number): Promise<Set<number>> {
  const [server, keyspace] = await Promise.all([conn.call(['INFO', 'server']), conn.call(['INFO', 'keyspace'])]);
  const serverText = textOf(server);
  const keyspaceText = textOf(keyspace);
  const none = new Set<number>();
  if (serverText === undefined || keyspaceText === undefined) return none;
  if (!/^redis_version:/m.test(serverText) || UNTRUSTED_SERVERS.test(serverText)) return none;
  const volatile = parseVolatileDbs(keyspaceText);
  if (volatile === undefined) return none;
  for (let db = 0; db < dbCount; db++) if (!volatile.has(db)) none.add(db);
  return none;
}

/**
 * Dbs whose `dbN:keys=..,expires=E,..` line has E > 0 (a db without a line holds no key).
 * Undefined when a db line does not have that shape: better no shortcut than a wrong one.
 */
export function parseVolatileDbs(keyspace: string): Set<number> | undefined {
  const volatile = new Set<number>();
  for (const line of keyspace.split(/\r?\n/)) {
    if (!line.startsWith('db')) continue;
    const m = /^db(\d+):keys=\d+,expires=(\d+)(,|$)/.exec(line);
    if (!m) return undefined;
    if (Number(m[2]) > 0) volatile.add(Number(m[1]));
  }
  return volatile;
}

function textOf(reply: Reply): string | undefined {
  if (reply instanceof NodeErrorReply || !Buffer.isBuffer(reply)) return undefined;
  return reply.toString('latin1');
}
