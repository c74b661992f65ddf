/**
 * server/transport/hooks.ts `PeerSocket`: on the node transport, what a socket is sent in one
 * event-loop turn of its handshake leaves in one write system call (the TCP socket under `ws`
 * corked for the turn), in order; later turns are not corked; the buffered-bytes bound still holds.
 * Driven in process with a real TCP socket pair and a stand-in for crossws's node peer (its
 * `_internal.ws._socket` is the one internal the cork relies on).
 */
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Peer } from 'crossws';
import { PeerSocket } from '../server/transport/hooks.ts';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanups.splice(0)) fn();
});

async function socketPair(): Promise<{ server: Socket; client: Socket }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as { port: number }).port;
  const accepted = once(listener, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  const [server] = await accepted;
  cleanups.push(() => {
    client.destroy();
    server.destroy();
    listener.close();
  });
  return { server, client };
}

/** What crossws's node peer gives PeerSocket: `send` (ws writes a frame: header and payload) and the socket. */
function peerOn(socket: Socket): Peer {
  return {
    _internal: { ws: { _socket: socket } },
    send(data: Uint8Array) {
      socket.cork(); // as ws's sendFrame does around its two writes
      socket.write(Buffer.from([data.byteLength]));
      socket.write(data);
      socket.uncork();
    },
    get bufferedAmount() {
      return socket.writableLength;
    },
    close() {},
    terminate() {},
  } as unknown as Peer;
}

/** Counts the socket's calls down into libuv: one per write system call (`_writev` or `_write`). */
function countWrites(socket: Socket): { calls: number; chunks: number } {
  const counts = { calls: 0, chunks: 0 };
  const s = socket as unknown as { _writev: (chunks: unknown[], cb: unknown) => void; _write: (...args: unknown[]) => void };
  const writev = s._writev.bind(socket);
  const write = s._write.bind(socket);
  s._writev = (chunks, cb) => {
    counts.calls += 1;
    counts.chunks += chunks.length;
    writev(chunks, cb);
  };
  s._write = (...args) => {
    counts.calls += 1;
    counts.chunks += 1;
    write(...args);
  };
  return counts;
}

async function received(client: Socket, bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  while (n < bytes) {
    const [chunk] = (await once(client, 'data')) as [Buffer];
    parts.push(chunk);
    n += chunk.length;
  }
  return Buffer.concat(parts);
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
/** A frame that is not a SyncStatus (those go through the acknowledgement gate): address 'd', type 0. */
const frame = (n: number) => new Uint8Array([1, 100, 0, n]);

describe('PeerSocket on the node transport', () => {
  it("sends one turn's frames of its handshake in one write, in order; later turns one write per frame as before", async () => {
    const { server, client } = await socketPair();
    const writes = countWrites(server);
    const socket = new PeerSocket(peerOn(server), null, { maxBufferedBytes: 1 << 20 });
    // One turn: three frames, from a hook and its promise continuations.
    socket.send(frame(1));
    await Promise.resolve();
    socket.send(frame(2));
    socket.send(frame(3));
    const got = received(client, 15);
    await tick();
    expect(writes, 'one write system call for the turn').toEqual({ calls: 1, chunks: 6 });
    expect([...(await got)]).toEqual([4, 1, 100, 0, 1, 4, 1, 100, 0, 2, 4, 1, 100, 0, 3]);

    // Past the handshake's turns: no cork, each frame its own write (ws's header + payload, one writev).
    for (let turn = 0; turn < 10; turn++) {
      socket.send(frame(10 + turn));
      await tick();
    }
    const before = writes.calls;
    socket.send(frame(50));
    socket.send(frame(51));
    await tick();
    expect(writes.calls - before, 'uncorked: one write per frame').toBe(2);
  });

  it('still closes a socket that is owed more than maxBufferedBytes, checked once the turn is sent', async () => {
    const { server, client } = await socketPair();
    client.pause(); // the client does not read
    let tooSlow = 0;
    const socket = new PeerSocket(peerOn(server), null, { maxBufferedBytes: 64 * 1024, onTooSlow: () => (tooSlow += 1) });
    const big = new Uint8Array(200); // a small frame header can say 200 (it stands for ws's)
    big.set([1, 100, 0]);
    for (let turn = 0; turn < 50_000 && tooSlow === 0; turn++) {
      for (let i = 0; i < 64; i++) socket.send(big);
      await tick();
    }
    expect(tooSlow).toBe(1);
    expect(socket.readyState).not.toBe(1);
  });
});
