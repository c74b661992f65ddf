/**
 * Fidelity, page against server: one saved version with every layer type and all 16 blend modes
 * (test/support/fidelity-canvas.ts, with a real ingested image), drawn by the editor page in
 * Chromium (web/draw.ts, Canvas 2D) and rendered by the server (`GET /api/versions/:id/render`,
 * renderer/), compared per pixel.
 *
 * Two measures, both printed: over the whole canvas (edges differ by anti-aliasing — Skia against
 * librsvg/Pango — so the bound is on the mean and on the share of clearly different pixels), and
 * at the centre of each blend-mode swatch, where no edge is near: there the two must agree within
 * a few levels per channel, mode by mode. The bounds are stated in the README ("The editor page").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import WebSocket from 'ws';
import type { Browser } from 'playwright-core';
import { connectCanvas } from '../client/index.ts';
import { blendModes } from '../shared/canvas.ts';
import { browserSkipReason, editorReady, launchBrowser } from './support/browser.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { fidelityLayers, SWATCH } from './support/fidelity-canvas.ts';
import { createActor, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

/** Whole canvas: mean absolute difference per channel (0..255) and share of pixels off by > 32. */
export const WHOLE_MEAN_MAX = 1.5;
export const WHOLE_FAR_SHARE_MAX = 0.02;
/** Swatch centres: largest difference in any channel (0..255). */
export const SWATCH_MAX = 4;

const skip = browserSkipReason();

describe.skipIf(skip)(`the page draws what the server renders${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let server: ServerProcess;
  let browser: Browser;
  let owner: { userId: string; token: string };
  let sessionId: string;
  let versionId: string;

  beforeAll(async () => {
    const database = await createDatabase('fidelity');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, dataDir: tempDir(register), register });
    const db = openPool(database.url, register);
    owner = await createActor(db, 'owner');
    // A real image: a four-colour 160 × 120 PNG through the ingest API.
    const quad = await sharp({ create: { width: 160, height: 120, channels: 3, background: '#ffffff' } })
      .composite([
        { input: { create: { width: 80, height: 60, channels: 3, background: '#ff0000' } }, left: 0, top: 0 },
        { input: { create: { width: 80, height: 60, channels: 3, background: '#00aa00' } }, left: 80, top: 0 },
        { input: { create: { width: 80, height: 60, channels: 3, background: '#0000ff' } }, left: 0, top: 60 },
      ])
      .png()
      .toBuffer();
    const uploaded = await fetch(`${server.url}/api/images?title=quad`, {
      method: 'POST',
      headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'image/png' },
      body: quad,
    });
    expect(uploaded.status).toBe(201);
    const imageId = ((await uploaded.json()) as { image: { imageId: string } }).image.imageId;
    sessionId = await createSession(server.url, owner.token, imageId);

    const client = connectCanvas({ url: server.wsUrl, sessionId, token: owner.token, WebSocketPolyfill: WebSocket });
    register(async () => client.destroy());
    await waitFor(() => client.saved, { what: 'client synced' });
    for (const id of client.layerIds()) client.removeLayer(id);
    client.setMeta({ width: 640, height: 400, background: '#ffffff' });
    for (const layer of fidelityLayers(imageId)) client.addLayer(layer);
    await client.whenSaved();
    versionId = (await client.saveVersion('fidelity')).versionId;
    browser = await launchBrowser(register);
  });

  it('agrees per pixel, for every layer type and blend mode', async () => {
    const rendered = await fetch(`${server.url}/api/versions/${versionId}/render?format=png`, { headers: { authorization: `Bearer ${owner.token}` } });
    expect(rendered.status).toBe(200);
    const serverPixels = await sharp(Buffer.from(await rendered.arrayBuffer())).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    expect([serverPixels.info.width, serverPixels.info.height]).toEqual([640, 400]);

    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.url}/#session=${sessionId}&token=${owner.token}`);
    await editorReady(page);
    await page.evaluate('document.fonts.ready');
    const url = (await page.evaluate(`window.__editor.renderVersionToDataUrl(${JSON.stringify(versionId)})`)) as string;
    const pagePixels = await sharp(Buffer.from(url.split(',')[1]!, 'base64')).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    expect([pagePixels.info.width, pagePixels.info.height]).toEqual([640, 400]);

    const a = pagePixels.data;
    const b = serverPixels.data;
    let sum = 0;
    let far = 0;
    for (let i = 0; i < a.length; i += 4) {
      let worst = 0;
      for (let k = 0; k < 4; k++) {
        const d = Math.abs(a[i + k]! - b[i + k]!);
        sum += d;
        worst = Math.max(worst, d);
      }
      if (worst > 32) far++;
    }
    const mean = sum / a.length;
    const farShare = far / (a.length / 4);
    const swatches = blendModes.map((mode, i) => {
      const [x, y] = SWATCH.centre(i);
      const o = (y * 640 + x) * 4;
      const diff = Math.max(...[0, 1, 2, 3].map((k) => Math.abs(a[o + k]! - b[o + k]!)));
      return { mode, page: [...a.subarray(o, o + 4)], server: [...b.subarray(o, o + 4)], diff };
    });
    console.log(
      `[fidelity] whole canvas: mean |Δ| ${mean.toFixed(2)}/255, ${(farShare * 100).toFixed(2)} % of pixels off by > 32; ` +
        `swatch centres: max |Δ| ${Math.max(...swatches.map((s) => s.diff))} (${swatches.map((s) => `${s.mode} ${s.diff}`).join(', ')})`,
    );
    expect(swatches.filter((s) => s.diff > SWATCH_MAX)).toEqual([]);
    expect(mean).toBeLessThan(WHOLE_MEAN_MAX);
    expect(farShare).toBeLessThan(WHOLE_FAR_SHARE_MAX);
  });
});
