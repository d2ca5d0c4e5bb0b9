/**
 * A bare Node.js RESP forwarder, for bench/node-floor.ts only: what any Node proxy must do per
 * request and nothing more. Client requests are framed (so replies can be matched), sent to one
 * node connection once per event-loop turn, and the node's replies written back once per turn
 * per client. No command table, no AUTH/SELECT/MULTI state, no write log, no backpressure, no
 * error handling beyond closing: it shows the cost of the Node.js runtime itself, which the
 * product's proxy cannot go below.
 *
 *   node dist/bench/lib/bare-forwarder.js <listen port> <node port>
 */
import net from 'node:net';

/** End of the RESP value starting at `pos`, or -1 when `buf` does not hold all of it yet. */
function valueEnd(buf: Buffer, pos: number): number {
  if (pos >= buf.length) return -1;
  const lineEnd = buf.indexOf(10, pos);
  if (lineEnd < 0) return -1;
  const type = buf[pos];
  if (type === 36) {
    const len = Number(buf.toString('latin1', pos + 1, lineEnd - 1));
    if (len < 0) return lineEnd + 1;
    const end = lineEnd + 1 + len + 2;
    return end <= buf.length ? end : -1;
  }
  if (type === 42) {
    let count = Number(buf.toString('latin1', pos + 1, lineEnd - 1));
    let next = lineEnd + 1;
    while (count-- > 0 && next >= 0) next = valueEnd(buf, next);
    return next;
  }
  return lineEnd + 1;
}

/** Complete values at the front of (rest + chunk): their end, and what is left for later. */
function frame(rest: Buffer | null, chunk: Buffer, onValue: (buf: Buffer, start: number, end: number) => void): Buffer | null {
  const buf = rest ? Buffer.concat([rest, chunk]) : chunk;
  let pos = 0;
  for (let end = valueEnd(buf, pos); end > 0; end = valueEnd(buf, pos)) {
    onValue(buf, pos, end);
    pos = end;
  }
  return pos < buf.length ? buf.subarray(pos) : null;
}

function main(): void {
  const [listenPort, nodePort] = process.argv.slice(2).map(Number);
  const waiting: net.Socket[] = [];
  let toNode: Buffer[] = [];
  const replies = new Map<net.Socket, Buffer[]>();
  let scheduled = false;
  const endTurn = (): void => {
    scheduled = false;
    if (toNode.length > 0) node.write(toNode.length === 1 ? toNode[0] : Buffer.concat(toNode));
    toNode = [];
    for (const [client, parts] of replies) client.write(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    replies.clear();
  };
  const schedule = (): void => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(endTurn);
    }
  };

  const node = net.connect(nodePort, '127.0.0.1');
  node.setNoDelay(true);
  let nodeRest: Buffer | null = null;
  node.on('data', (chunk: Buffer) => {
    nodeRest = frame(nodeRest, chunk, (buf, start, end) => {
      const client = waiting.shift()!;
      const parts = replies.get(client);
      if (parts) parts.push(buf.subarray(start, end));
      else replies.set(client, [buf.subarray(start, end)]);
    });
    schedule();
  });
  node.on('error', () => process.exit(1));

  net
    .createServer({ noDelay: true }, (client) => {
      let rest: Buffer | null = null;
      client.on('data', (chunk: Buffer) => {
        rest = frame(rest, chunk, (buf, start, end) => {
          toNode.push(buf.subarray(start, end));
          waiting.push(client);
        });
        schedule();
      });
      client.on('error', () => client.destroy());
    })
    .listen(listenPort, '127.0.0.1');
}

main();
