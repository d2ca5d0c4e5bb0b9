/**
 * How a client socket's bytes reach its session: read into one buffer shared by every client
 * socket, and copied out into a small pooled Buffer per read.
 *
 * Why: at redis-benchmark -P 1 every request is a read of its own, and Node's default read path
 * costs more per read than the rest of the request's handling: a fresh 64 KiB allocation cut down
 * to size, a new ArrayBuffer the GC must sweep, and a pass through the Readable stream machinery
 * up to a 'data' event. Node's own answer is the `onread` socket option (a user buffer and a
 * callback, no stream machinery), but net.Server offers it only to sockets it connects, not to
 * those it accepts. The option is three symbol-keyed fields of the socket plus `useUserBuffer`
 * on its handle; this module sets the same fields on an accepted socket, found by description on
 * a probe socket made with the public option. If a Node version names them differently, the
 * socket falls back to 'data' events (same bytes, same order, only slower).
 *
 * Safety: libuv reads one socket at a time and the callback copies the bytes out before it
 * returns, so one buffer serves every socket; what a session keeps is always its own copy.
 * Sockets must come from a server created with `pauseOnConnect: true`, so nothing is read
 * before the user buffer is in place; `readClientChunks` starts the reading.
 */
import net from 'node:net';

/** As Node's default: one read takes at most this much, more waits for the next read. */
const READ_BUFFER_BYTES = 64 * 1024;

interface OnreadFields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

const onreadFields = findOnreadFields();
const sharedReadBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);

function findOnreadFields(): OnreadFields | null {
  // (@types/node lists `onread` only among the connect options; the constructor takes it too.)
  const options = { onread: { buffer: Buffer.alloc(1), callback: () => undefined } };
  const probe = new net.Socket(options as net.SocketConstructorOpts);
  const byName = new Map(Object.getOwnPropertySymbols(probe).map((s) => [s.description, s]));
  probe.destroy();
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  return buffer && callback && generator ? { buffer, callback, generator } : null;
}

/** True when accepted sockets read through the shared buffer (false: through 'data' events). */
export const sharedReadsAvailable = onreadFields !== null;

/**
 * Delivers every chunk read from `socket` (accepted paused) to `onChunk`, in order, and starts
 * reading. Each chunk is the session's own Buffer. pause()/resume() keep working as usual.
 */
export function readClientChunks(socket: net.Socket, onChunk: (chunk: Buffer) => void): void {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buf: Buffer) => void } })._handle;
  if (onreadFields && handle && typeof handle.useUserBuffer === 'function') {
    const fields = socket as unknown as Record<symbol, unknown>;
    fields[onreadFields.buffer] = sharedReadBuffer;
    fields[onreadFields.generator] = null;
    fields[onreadFields.callback] = (bytes: number, buf: Buffer): void => {
      // Small reads come from Node's Buffer pool: a slice, not an allocation.
      const chunk = Buffer.allocUnsafe(bytes);
      buf.copy(chunk, 0, 0, bytes);
      onChunk(chunk);
    };
    handle.useUserBuffer(sharedReadBuffer);
  } else {
    socket.on('data', onChunk);
  }
  socket.resume();
}
