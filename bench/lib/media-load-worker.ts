/**
 * The renders scenario's media load, in its own process (forked by bench/scenarios/renders.ts,
 * never imported): on-demand renders of a live session at a new size each time, versions saved
 * of that session (each a thumbnail job for the render worker), and image ingests, all in closed
 * loops. In the bench process they competed with the editing clients whose delivery latency is
 * the scenario's figure (reading multi-megabyte render bodies and sending ingest uploads on the
 * same event loop that timestamps deliveries), so part of what was measured was the load
 * generator's own delay, not the server's.
 *
 * Requests over IPC: `start` (sets up and starts the loops, answers `started`), `stop` (stops them,
 * answers `stopped` with each loop's statistics and exits).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { photoJpeg } from '../../test/support/images.ts';
import { connectMany } from './clients.ts';
import { closedLoop, okBody, type LoopStats } from './load.ts';

export type MediaLoadRequest = { op: 'start'; base: string; wsUrl: string; token: string; sessionId: string } | { op: 'stop' };
export type MediaLoadReply =
  | { op: 'started' }
  | { op: 'stopped'; renders: LoopStats; saves: LoopStats; ingests: LoopStats }
  | { op: 'error'; message: string };

const reply = (message: MediaLoadReply) => process.send?.(message);


let loops: Array<ReturnType<typeof closedLoop>> = [];
let destroy: () => void = () => {};

process.on('message', (message: MediaLoadRequest) => {
  void (async () => {
    try {
      if (message.op === 'start') {
        const { base, wsUrl, token, sessionId } = message;
        const auth = { authorization: `Bearer ${token}` };
        const [editor] = await connectMany(wsUrl, [sessionId], token);
        destroy = () => editor?.destroy();
        // Ingest inputs: different bytes each (ingest is content-addressed; the same bytes twice is a no-op).
        const inputs = await Promise.all(Array.from({ length: 6 }, (_, i) => photoJpeg(2040 - i * 8, 1356, { quality: 88 })));
        const renders = closedLoop(2, async (_loop, n) => {
          const width = 200 + (n % 1600); // a new size each time: a cache miss, a real render
          await okBody(await fetch(`${base}/api/sessions/${sessionId}/render?width=${width}&format=webp`, { headers: auth }), 'render');
        });
        const saves = closedLoop(1, async (_loop, n) => {
          const hue = (n * 37) % 360;
          editor!.doc.getMap('meta').set('background', `#${((hue * 45) % 0xffffff).toString(16).padStart(6, '0')}`);
          await sleep(20); // the change reaches the server before the snapshot reads it
          await okBody(await fetch(`${base}/api/sessions/${sessionId}/versions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' }), 'save');
          // Saves of one session are rate-limited (30 a minute): the fastest this load may save.
          await sleep(2_000);
        });
        const ingests = closedLoop(1, async (_loop, n) => {
          await okBody(
            await fetch(`${base}/api/images?privacyLevel=private`, {
              method: 'POST',
              headers: { ...auth, 'content-type': 'application/octet-stream' },
              body: new Uint8Array(inputs[n % inputs.length]!),
            }),
            'ingest',
          ).catch((error: unknown) => {
            // The same bytes again after a full cycle: a duplicate is not an ingest failure here.
            if (!String(error).includes('409')) throw error;
          });
        });
        loops = [renders, saves, ingests];
        reply({ op: 'started' });
      } else {
        const [renders, saves, ingests] = await Promise.all(loops.map((loop) => loop.stop()));
        destroy();
        reply({ op: 'stopped', renders: renders!, saves: saves!, ingests: ingests! });
        process.disconnect();
      }
    } catch (error) {
      reply({ op: 'error', message: error instanceof Error ? error.message : String(error) });
    }
  })();
});
