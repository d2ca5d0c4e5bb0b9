/**
 * SYNC / PSYNC from a client: the node's own replication stream, piped byte for byte. A client
 * that attaches as a replica (Redis's test suite reads what the node propagates this way; tools
 * like redis-cli --rdb and replication-stream readers do the same) gets from the proxy what it
 * would get from the node: the RDB and then every write the node propagates, on a connection of
 * its own.
 *
 * Only once the node has accepted the sync (its first byte is not an error) is the client
 * diverted, and from then on only its REPLCONF commands reach the node: nothing it sends can
 * write to the node behind the write log. A node that refuses (Pika has no SYNC) answers an error,
 * which the client gets as the command's reply, and the session goes on as before.
 *
 * It is a read: a replica proxy whose sync is not confirmed refuses it like any read. Replicas of
 * this proxy do not attach this way (they use SLAVEOF and the sync service).
 */
import net from 'node:net';
import * as encode from '../resp/encode';
import { RequestParser } from '../resp/request-parser';
import type { ClientSession } from './client-session';

export async function pipeReplicationStream(s: ClientSession, raw: Buffer): Promise<void> {
  const refusal = s.readRefusal();
  if (refusal) return s.reply(refusal);
  // Everything answered before is written first; the SYNC itself has no reply slot.
  await s.repliesSettled();
  const { host, port } = s.ctx.config.backend;
  const password = s.ctx.config.backendPassword;
  const node = net.connect({ host, port });
  node.setNoDelay(true);
  await new Promise<void>((resolve) => {
    let stage: 'auth' | 'first' | 'piped' = password !== undefined ? 'auth' : 'first';
    let pending = Buffer.alloc(0);
    let ended = false;
    const end = (error?: string): void => {
      if (ended) return;
      ended = true;
      node.destroy();
      if (stage === 'piped') s.socket.destroy();
      else s.reply(encode.error(error ?? 'ERR the node closed the connection before answering SYNC'));
      resolve();
    };
    // SYNC goes only once AUTH is answered: Redis refuses SYNC on a connection with a reply still
    // pending ("SYNC and PSYNC are invalid with pending output"), which AUTH's +OK would be.
    node.once('connect', () => node.write(password !== undefined ? encode.encodeCommand(['AUTH', password]) : raw));
    node.on('data', (chunk) => {
      if (stage === 'piped') return void s.socket.write(chunk);
      pending = Buffer.concat([pending, chunk]);
      if (stage === 'auth') {
        // The AUTH reply is the proxy's, not the client's: one line, +OK or an error.
        const eol = pending.indexOf('\r\n');
        if (eol < 0) return;
        if (pending[0] !== 43) return end(`ERR the node refused the proxy's AUTH: ${pending.toString('latin1', 1, eol)}`);
        pending = pending.subarray(eol + 2);
        stage = 'first';
        node.write(raw);
      }
      // Newlines are the node's keep-alives while it prepares the RDB: wait for a real byte.
      const first = pending.findIndex((b) => b !== 10);
      if (first < 0) return;
      if (pending[first] === 45) {
        const eol = pending.indexOf('\r\n', first);
        if (eol < 0) return;
        return end(pending.toString('latin1', first + 1, eol));
      }
      stage = 'piped';
      s.socket.write(pending);
      const parser = new RequestParser();
      s.divert((bytes) => {
        try {
          parser.feed(bytes);
          for (let req = parser.next(); req; req = parser.next()) if (req.name === 'replconf') node.write(req.raw);
        } catch {
          end(); // not RESP: the replica link ends, as the node would end it
        }
      });
    });
    node.on('error', (err) => end(`ERR the node connection for SYNC failed: ${err.message}`));
    node.on('close', () => end());
    s.socket.on('close', () => end());
  });
}
