/** Picks and starts the transport named by TRANSPORT (`auto`: uws where it loads, else node). */
import { listenNode } from './node.ts';
import { listenUws, loadUws } from './uws.ts';
import type { Listening, TransportHandlers } from './types.ts';

export type { Listening, TransportHandlers, TransportName } from './types.ts';

export async function listen(
  choice: 'auto' | 'uws' | 'node',
  handlers: TransportHandlers,
  host: string,
  port: number,
): Promise<{ listening: Listening; note: string }> {
  if (choice === 'node') return { listening: await listenNode(handlers, host, port), note: 'node (TRANSPORT=node)' };
  const loaded = loadUws();
  if ('uws' in loaded) {
    return { listening: await listenUws(loaded.uws, handlers, host, port), note: `uws (TRANSPORT=${choice})` };
  }
  if (choice === 'uws') throw new Error(`TRANSPORT=uws but uWebSockets.js does not load here: ${loaded.error}`);
  return { listening: await listenNode(handlers, host, port), note: `node (uWebSockets.js does not load here: ${loaded.error})` };
}
