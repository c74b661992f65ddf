/**
 * One native publish per document broadcast where the transport has pub/sub (uWebSockets.js),
 * instead of one JavaScript send per connection.
 *
 * Hocuspocus broadcasts an update, an awareness change or a stateless message by encoding it once
 * per message address and calling `connection.send` for every connection of the document
 * (`Document.broadcast`, @hocuspocus/server 4.7). On uWebSockets.js each such send crosses into
 * C++ on its own, through crossws and our `PeerSocket`. Here, a connection whose socket can
 * subscribe is subscribed to a topic for its address when Hocuspocus adds it to the document, and
 * a broadcast publishes the encoded frame once per topic (`App.publish`): uWS writes it to every
 * subscriber in C++, corked with the loop iteration's other writes. Connections that cannot
 * subscribe (the node transport) and filtered broadcasts still go one send at a time, as before.
 *
 * What keeps the order and the limits:
 * - A socket's direct sends (sync replies, acknowledgements) drain what was published to it first
 *   (uWS `WebSocket::send` drains the subscriber's topic-tree queue before writing), so a reader
 *   sees frames in the order Hocuspocus produced them.
 * - Backpressure: uWS drops a published frame for a socket over `maxBackpressure` and calls the
 *   `dropped` handler, which closes the socket `client_too_slow` as the JavaScript check does
 *   (transport/uws.ts).
 * - A y-websocket socket (`/yjs/<id>`) gets the re-addressed frame (transport/y-websocket.ts) on
 *   a topic of its own.
 * - A connection leaves its topic when Hocuspocus removes it from the document (its document
 *   closed, refused, or the socket closed); uWS drops a closed socket's subscriptions itself.
 *
 * The echo is left out: an update broadcast whose updates all came from one client connection is
 * not sent back to it (see `origins` below). On the topic path its own topic is published from
 * its socket (uWS `WebSocket.publish` skips the publisher), the other topics from the app.
 *
 * The Hocuspocus internals this relies on, checked against @hocuspocus/server 4.7.0: the
 * instance methods `Document.addConnection`, `removeConnection`, `broadcast(encode, filter)` and
 * `broadcastUpdate(update)` (called by `flush` through the instance),
 * and `Connection.messageAddress` and `webSocket`. Replaced per document instance, not on the
 * prototype.
 */
import { isTransactionOrigin, type Connection, type Document } from '@hocuspocus/server';
import type * as Y from 'yjs';
import { fromHocuspocus } from './y-websocket.ts';

/** What a socket that can subscribe hands back: where to publish for its connection. */
export interface Subscription {
  readonly topic: string;
  /** True for a y-websocket socket: frames are re-addressed before they are published. */
  readonly yjs: boolean;
  /** Publishes a frame to every socket subscribed to `topic` (the transport's app-level publish). */
  readonly publish: (topic: string, frame: Uint8Array) => void;
}

/** A socket that may take part: `PeerSocket` on a transport with native pub/sub. */
export interface Subscriber {
  subscribe(address: string): Subscription | null;
  unsubscribe(topic: string): void;
  /** Publishes to the topic's other subscribers; false when this socket cannot (then publish to all). */
  publishToOthers(topic: string, frame: Uint8Array): boolean;
}

function isSubscriber(socket: unknown): socket is Subscriber {
  return typeof (socket as Partial<Subscriber> | null)?.subscribe === 'function';
}

interface Topic {
  readonly subscription: Subscription;
  /** The Hocuspocus address the topic's frames are encoded for. */
  readonly address: string;
  connections: number;
}

type Encode = (address: string) => Uint8Array;
type Filter = (connection: Connection) => boolean;

/** Counters for tests and metrics: broadcasts published natively, and frames published. */
export const publishStats = { broadcasts: 0, publishes: 0 };

/** Yjs's own test for whether a transaction emits an `update` (writeUpdateMessageFromTransaction). */
function emitsUpdate(transaction: Y.Transaction): boolean {
  if (transaction.deleteSet.clients.size > 0) return true;
  for (const [client, clock] of transaction.afterState) if (transaction.beforeState.get(client) !== clock) return true;
  return false;
}

/**
 * Makes `document`'s broadcasts go out as one publish per topic to its subscribed connections
 * (see the header). Safe on any transport: with no subscribing socket it behaves as Hocuspocus.
 */
export function publishBroadcasts(document: Document): void {
  const addConnection = document.addConnection.bind(document);
  const removeConnection = document.removeConnection.bind(document);
  // `broadcast` is private in Hocuspocus's typings: the one cast of this file.
  const internals = document as unknown as { broadcast: (encode: Encode, filter?: Filter) => void };
  const broadcast = internals.broadcast.bind(document);
  /** Topic of each subscribed connection. */
  const subscribed = new Map<Connection, string>();
  const topics = new Map<string, Topic>();

  document.addConnection = (connection: Connection) => {
    addConnection(connection);
    const socket: unknown = connection.webSocket;
    if (!subscribed.has(connection) && isSubscriber(socket)) {
      const address = connection.messageAddress;
      const subscription = socket.subscribe(address);
      if (subscription) {
        subscribed.set(connection, subscription.topic);
        const topic = topics.get(subscription.topic);
        if (topic) topic.connections += 1;
        else topics.set(subscription.topic, { subscription, address, connections: 1 });
      }
    }
    return document;
  };

  document.removeConnection = (connection: Connection) => {
    const topicName = subscribed.get(connection);
    if (topicName !== undefined) {
      subscribed.delete(connection);
      (connection.webSocket as unknown as Subscriber).unsubscribe(topicName);
      const topic = topics.get(topicName)!;
      topic.connections -= 1;
      if (topic.connections === 0) topics.delete(topicName);
    }
    return removeConnection(connection);
  };

  // The echo. Hocuspocus sends each flushed update to every connection of the document, the ones
  // it came from included (`broadcastUpdate` passes no filter), though they hold it already and
  // Yjs drops the copy. When every update of a flush came from one connection, that connection is
  // left out. Origins are noted at `afterTransaction`, which Yjs emits before `update` (so before
  // Hocuspocus may flush); any transaction not from a client connection makes the flush go to all.
  let origins: Connection | 'mixed' | null = null;
  let excluding: Connection | null = null;
  document.on('afterTransaction', (transaction: Y.Transaction) => {
    // Only a transaction that emits an update counts (Yjs's own test, writeUpdateMessageFromTransaction):
    // Hocuspocus applies a blank `[0, 0]` after each of ours, with another origin object.
    if (!emitsUpdate(transaction)) return;
    const origin: unknown = transaction.origin;
    const from = isTransactionOrigin(origin) && origin.source === 'connection' ? origin.connection : undefined;
    if (from === undefined) origins = 'mixed';
    else if (origins === null) origins = from;
    else if (origins !== from) origins = 'mixed';
  });
  const updates = document as unknown as { broadcastUpdate: (update: Uint8Array) => void };
  const broadcastUpdate = updates.broadcastUpdate.bind(document);
  updates.broadcastUpdate = (update: Uint8Array) => {
    const from = origins;
    origins = null;
    excluding = from === null || from === 'mixed' ? null : from;
    try {
      broadcastUpdate(update);
    } finally {
      excluding = null;
    }
  };

  internals.broadcast = (encode: Encode, filter?: Filter) => {
    const leftOut = excluding;
    if (filter !== undefined || subscribed.size === 0) {
      if (leftOut === null) broadcast(encode, filter);
      else broadcast(encode, filter === undefined ? (connection) => connection !== leftOut : (connection) => connection !== leftOut && filter(connection));
      return;
    }
    // Connections without a topic: one send each, one encode per run of equal addresses (as Hocuspocus).
    if (subscribed.size < document.connections.size) {
      broadcast(encode, (connection) => !subscribed.has(connection) && connection !== leftOut);
    }
    const leftOutTopic = leftOut === null ? undefined : subscribed.get(leftOut);
    publishStats.broadcasts += 1;
    let cachedAddress: string | undefined;
    let cached: Uint8Array | undefined;
    for (const [name, topic] of topics) {
      if (cached === undefined || topic.address !== cachedAddress) {
        cachedAddress = topic.address;
        cached = encode(topic.address);
      }
      let frame: Uint8Array | null = cached;
      if (topic.subscription.yjs) {
        const out = fromHocuspocus(cached);
        frame = out && 'send' in out ? out.send : null;
      }
      if (frame === null) continue;
      if (name !== leftOutTopic || !(leftOut!.webSocket as unknown as Subscriber).publishToOthers(name, frame)) {
        topic.subscription.publish(name, frame);
      }
      publishStats.publishes += 1;
    }
  };
}
