/**
 * XREAD BLOCK: a read that may block for as long as the client asks, so it runs on the client's
 * own connection to the node (on a shared lane it would hold every command queued behind it).
 * The connection is made at the client's first XREAD BLOCK and closed with the client.
 */
import type { NodeConnection } from '../backend/node-connection';
import * as encode from '../resp/encode';
import type { ClientSession } from './client-session';
import { errorReply } from './refusals';

const connections = new WeakMap<ClientSession, NodeConnection>();

export async function runBlockingRead(s: ClientSession, raw: Buffer): Promise<void> {
  const refusal = s.readRefusal();
  if (refusal) return s.reply(refusal);
  // The client's earlier replies first: its later commands wait behind this one anyway.
  await s.repliesSettled();
  if (s.closed) return; // gone meanwhile: no connection to open (its close listeners have run)
  const conn = connections.get(s) ?? (await connect(s));
  const slot = s.slot();
  await new Promise<void>((resolve) => {
    conn.send(encode.encodeCommand(['SELECT', String(s.db)]), () => undefined);
    conn.send(raw, (reply, err) => {
      s.fill(slot, reply ? reply.raw : errorReply(err));
      resolve();
    });
  });
}

/** The client's own connection, closed with the client. */
async function connect(s: ClientSession): Promise<NodeConnection> {
  const conn = s.ctx.dedicatedConnection();
  connections.set(s, conn);
  s.onClosed(() => conn.destroy());
  await conn.connect();
  return conn;
}
