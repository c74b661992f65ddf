/**
 * The embedded database serves many connections on PGlite's one session (pglite-socket): each
 * connection's extended-protocol batch must run as a unit, or concurrent parameterised queries run
 * into each other's statements and portals (electric-sql/pglite#1046; persistence/pglite-batches.ts).
 * Without the workaround this failed 3 of 3 runs pinned to one busy core (`portal "" does not
 * exist` → 500 on about 1 of 40 requests); with it, 0 of 120 requests.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { api, createActor, createImage, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

describe('embedded database over pglite-socket', () => {
  it('answers concurrent requests that each run several parameterised queries: no statement or portal mixed up', async () => {
    const server = await startServerProcess({ transport: 'node', databaseUrl: undefined, dataDir: tempDir(register), register });
    const db = openPool(server.databaseUrl, register);
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const statuses: number[] = [];
    for (let round = 0; round < 10; round++) {
      const answers = await Promise.all([0, 1, 2, 3].map(() => api(server.url, 'POST', '/api/sessions', { token: owner.token, body: { imageId } })));
      statuses.push(...answers.map((a) => a.status));
    }
    const errors = server.output().split('\n').filter((line) => line.includes('"level":50'));
    expect(errors, errors.join('\n')).toEqual([]);
    expect(statuses).toEqual(new Array(40).fill(201));
  }, 120_000);
});
