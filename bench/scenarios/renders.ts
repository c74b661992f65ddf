/**
 * Renders beside live editing, a scenario of bench/run.ts (`npm run bench -- --only renders`).
 *
 * Target (the renderer issue): while renders and ingests run at full speed, the WebSocket
 * delivery p99 of a concurrent editing load rises by at most 20 %.
 *
 * One of our servers (node transport, PostgreSQL, local blob store, the inline render worker),
 * one editing load — bench/scenarios/fanout.ts: D sessions × C clients, every client of a session
 * editing at a fixed rate, delivery latency measured at the other clients — measured twice:
 * 1. alone;
 * 2. while, at full speed (closed loops), (a) on-demand renders of a live session with a 2K photo
 *    layer at a new size every request (a cache miss each time: a real render in the renderer's
 *    worker-thread pool), (b) versions saved of a session whose canvas changes before each save
 *    (so each thumbnail job of the render worker is a real render; at most one every 2 s, the
 *    per-session save limit), and (c) image ingests
 *    (`POST /api/images`, a 2K JPEG each time with different bytes) all run.
 * Reported: delivery p50/p99 in both, the p99 ratio against the 1.20 target, and what the render
 * and ingest loads achieved meanwhile. Writes its section of bench/RESULTS.md.
 */
import { availableParallelism, cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import { photoJpeg } from '../../test/support/images.ts';
import type { ServerChild } from '../lib/child.ts';
import { createBenchDatabase } from '../lib/database.ts';
import { okBody } from '../lib/load.ts';
import { startMediaLoad } from '../lib/loadgen.ts';
import { gitFacts } from '../lib/machine.ts';
import { busyCores } from '../lib/procfs.ts';
import { writeSection } from '../lib/results-file.ts';
import { fmt } from '../lib/stats.ts';
import { oursTarget } from '../lib/targets.ts';
import { runFanout, type FanoutOptions, type FanoutResult } from './fanout.ts';

/** The editing load of one run; `full` is the published one. */
export const RENDERS_SIZES: Record<'full' | 'quick' | 'tiny', FanoutOptions> = {
  full: { documents: 10, clientsPerDocument: 5, editsPerSecondPerClient: 4, warmupMs: 3_000, windowMs: 20_000, drainMs: 10_000 },
  quick: { documents: 5, clientsPerDocument: 5, editsPerSecondPerClient: 4, warmupMs: 2_000, windowMs: 8_000, drainMs: 5_000 },
  tiny: { documents: 2, clientsPerDocument: 3, editsPerSecondPerClient: 4, warmupMs: 300, windowMs: 1_000, drainMs: 2_000 },
};

export interface RendersRun {
  size: keyof typeof RENDERS_SIZES;
  resultsFile: string;
  command: string;
  section: string;
}


async function metric(server: ServerChild, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => pattern.test(line))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

const row = (label: string, r: FanoutResult) =>
  `| ${label} | ${fmt(r.deliveredPerSecond, 0)} | ${fmt(r.latency.p50)} | ${fmt(r.latency.p99)} | ${fmt(r.latency.max)} | ${fmt(r.serverCpuSeconds / r.windowSeconds)} | ${fmt(r.otherCores)} | ${r.delivered}/${r.expectedDeliveries} |`;

/** Runs the scenario, writes its section and resolves with its first lines. */
export async function runRenders({ size, resultsFile, command, section }: RendersRun): Promise<string> {
  const FANOUT = RENDERS_SIZES[size];
  const startedAt = new Date();
  const database = await createBenchDatabase();
  const target = oursTarget(database, 'node', [], { label: 'ours (node, inline render worker)' });
  let server: ServerChild | undefined;
  let media: ReturnType<typeof startMediaLoad> | undefined;
  try {
    server = await target.start();
    const idleBefore = await busyCores(2_000);

    // 1. The editing load alone (it also creates the owner whose token the render load uses).
    const alone = await runFanout(target, server, database, FANOUT);
    const token = target.token();
    const auth = { authorization: `Bearer ${token}` };
    const base = server.httpUrl;

    // The render load's fixtures: a real 2K photo, a session showing it, one client editing it.
    const photo = await photoJpeg(2040, 1356, { quality: 90 });
    const uploaded = (await okBody(
      await fetch(`${base}/api/images?privacyLevel=private`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/octet-stream' },
        body: new Uint8Array(photo),
      }),
      'upload',
    )) as { image: { imageId: string } };
    const imageId = uploaded.image.imageId;
    const session = (await okBody(
      await fetch(`${base}/api/sessions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ imageId }) }),
      'session',
    )) as { session: { sessionId: string } };
    const sessionId = session.session.sessionId;
    const jobs0 = await metric(server, /^imageflow_render_jobs_total\{outcome="done"/);
    const renders0 = await metric(server, /^imageflow_renders_total\{outcome="rendered"/);

    // 2. The same editing load while renders, thumbnails and ingests run at full speed, driven from
    // their own process (bench/lib/media-load-worker.ts) so this process only times deliveries.
    media = startMediaLoad();
    await media.request({ op: 'start', base, wsUrl: server.wsUrl, token, sessionId }, 'started');
    const loaded = await runFanout(target, server, database, FANOUT);
    const { renders, saves, ingests } = await media.request({ op: 'stop' }, 'stopped');
    // Let the worker finish the thumbnails of the versions saved meanwhile.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (await metric(server, /^imageflow_render_queue_waiting/)) > 0) await sleep(500);
    const jobs = (await metric(server, /^imageflow_render_jobs_total\{outcome="done"/)) - jobs0;
    const rendered = (await metric(server, /^imageflow_renders_total\{outcome="rendered"/)) - renders0;
    const idleAfter = await busyCores(2_000);

    const ratio = loaded.latency.p99 / alone.latency.p99;
    const seconds = (FANOUT.warmupMs + FANOUT.windowMs) / 1000;
    const body = [
      '## Renders beside editing',
      '',
      `- Command: \`${command}\` (scenario renders of bench/run.ts). One server (node transport, PostgreSQL, local blob store, inline render worker); editing load ${FANOUT.documents} sessions × ${FANOUT.clientsPerDocument} clients, each client ${FANOUT.editsPerSecondPerClient} edits/s, ${FANOUT.windowMs / 1000} s window.`,
      `- Date: ${startedAt.toISOString()}; code: ${gitFacts()}; Node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), sharp ${sharp.versions.sharp}.`,
      `- **Machine load**: other cores busy before/after: ${fmt(idleBefore)} / ${fmt(idleAfter)} ("other cores" below is per window); the load generator shares the cores with the server. The ratio (loaded ÷ alone, same server, same minutes) is the figure; absolute latencies move with the machine.`,
      '',
      '| editing load | deliveries/s | p50 ms | p99 ms | max ms | server cores | other cores | delivered |',
      '|---|---|---|---|---|---|---|---|',
      row('alone', alone),
      row('with renders, thumbnails and ingests at full speed', loaded),
      '',
      `**Delivery p99 with the render load: ${fmt(ratio)}× the p99 alone** (target ≤ 1.20×: ${ratio <= 1.2 ? 'met' : 'not met'} in this run).`,
      '',
      `Meanwhile (≈ ${fmt(seconds, 0)} s, warm-up included): ${renders.done} on-demand renders of the live 2K canvas at a new size each (2 in flight; ${fmt(renders.done / seconds, 1)}/s, p50 ${fmt(renders.latency.p50)} ms, p99 ${fmt(renders.latency.p99)} ms; ${renders.failed} failed${renders.failed ? `: ${renders.lastError.slice(0, 120)}` : ''}), ${saves.done} versions saved (${saves.failed} failed${saves.failed ? `: ${saves.lastError.slice(0, 160)}` : ''}), ${jobs} thumbnail jobs done by the inline worker, ${rendered} renders in all by the server, ${ingests.done} ingests of a 2K JPEG (p50 ${fmt(ingests.latency.p50)} ms; ${ingests.failed} failed${ingests.failed ? `: ${ingests.lastError.slice(0, 120)}` : ''}).`,
      'Renders and ingests run in worker threads (the renderer\'s pool, libvips\'s threads), so the event loop that delivers edits only waits for their I/O; on two shared cores they still compete for CPU with it, which is what the ratio measures. The media load is driven from its own process (bench/lib/media-load-worker.ts), the editing clients from this one.',
    ].join('\n');
    writeSection(resultsFile, section, body);
    return body.split('\n').slice(0, 3).join('\n');
  } finally {
    media?.kill(); // gone already after a clean stop
    await server?.kill9().catch(() => {});
    target.cleanup();
    await database.drop().catch(() => {});
  }
}
