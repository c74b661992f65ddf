// Same-node delivery latency probe: in-process servers, two providers, timestamps inside edits.
import pino from 'pino';
import { Server } from '@hocuspocus/server';
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as Y from 'yjs';
import { startServer } from '../server/app.ts';
import { loadConfig } from '../server/config.ts';
import { createDatabase } from '../test/support/databases.ts';
import { createActor, createImage, createSession, openPool } from '../test/support/fixtures.ts';
import { tempDir, TEST_SECRET } from '../test/support/server-process.ts';
const fns: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void fns.unshift(fn);
function client(url: string, name: string, token: string) {
  const ws = new HocuspocusProviderWebsocket({ url });
  const doc = new Y.Doc();
  const p = new HocuspocusProvider({ websocketProvider: ws, name, document: doc, token });
  p.attach();
  return { doc, p, ws, synced: new Promise<void>((r) => p.on('synced', () => r())) };
}
async function measure(url: string, name: string, token: string, label: string) {
  const a = client(url, name, token), b = client(url, name, token);
  await Promise.all([a.synced, b.synced]);
  const lat: number[] = [];
  b.doc.getMap('m').observe((e) => { for (const k of e.keysChanged) { const v = b.doc.getMap('m').get(k) as number; lat.push(performance.now() - v); } });
  for (let i = 0; i < 400; i++) { a.doc.getMap('m').set(`k${i}`, performance.now()); await new Promise((r) => setTimeout(r, 10)); }
  await new Promise((r) => setTimeout(r, 300));
  lat.sort((x, y) => x - y);
  console.log(label.padEnd(28), 'n', lat.length, 'p50', lat[Math.floor(lat.length * 0.5)]!.toFixed(3), 'p90', lat[Math.floor(lat.length * 0.9)]!.toFixed(3), 'p99', lat[Math.floor(lat.length * 0.99)]!.toFixed(3));
  a.p.destroy(); b.p.destroy(); a.ws.destroy(); b.ws.destroy();
}
const stock = new Server({ port: 0, address: '127.0.0.1', quiet: true });
await stock.listen();
const stockUrl = `ws://127.0.0.1:${(stock.httpServer.address() as { port: number }).port}`;
const database = await createDatabase('lat');
register(database.drop);
const env = (process.env.LAT_ENV ?? '').split(/\s+/).filter(Boolean).map((p) => p.split('='));
const server = await startServer(loadConfig({ DATABASE_URL: database.url, AUTH_JWT_SECRET: TEST_SECRET, DATA_DIR: tempDir(register), HOST: '127.0.0.1', PORT: '0', TRANSPORT: 'node', RENDER_WORKER: 'off', ...Object.fromEntries(env) }), { logger: pino({ level: 'silent' }) });
const pool = openPool(database.url, register);
const owner = await createActor(pool, 'o');
const wsUrl = `${server.url.replace('http', 'ws')}/collab`;
for (let round = 0; round < 2; round++) {
  await measure(stockUrl, `doc-${round}`, 'x', 'stock (in process)');
  await measure(wsUrl, await createSession(server.url, owner.token, await createImage(pool, owner.userId)), owner.token, 'ours (in process)');
}
await server.close(); await stock.destroy();
for (const fn of fns) await fn().catch(() => {});
process.exit(0);
