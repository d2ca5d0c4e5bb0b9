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
  let conn = connections.get(s);
  if (!conn) {
    conn = s.ctx.dedicatedConnection();
    connections.set(s, conn);
    const made = conn;
    s.onClosed(() => made.destroy());
    await conn.connect();
  }
  const slot = s.slot();
  const on = conn;
  await new Promise<void>((resolve) => {
    on.send(encode.encodeCommand(['SELECT', String(s.db)]), () => undefined);
    on.send(raw, (reply, err) => {
      s.fill(slot, reply ? reply.raw : errorReply(err));
      resolve();
    });
  });
}
