/**
 * The demo editor (web/) in a real browser: Debian's Chromium through playwright-core, two
 * browser contexts as two people on one canvas, against the real server. The page reaches the
 * server through a TCP proxy the test cuts to take a context offline (Playwright's setOffline
 * does not touch open WebSockets: playwright#4910), with setOffline on top so the page's
 * `navigator.onLine` agrees.
 *
 * UPDATE_SCREENSHOTS=1 rewrites docs/editor-two-people.png from the two-people test.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { browserSkipReason, dragOnCanvas, editorReady, launchBrowser, onClient } from './support/browser.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';
import { startProxy, type TcpProxy } from './support/tcp-proxy.ts';
import { matrix } from './support/matrix.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const skip = browserSkipReason();

describe.skipIf(skip)(`the editor in Chromium${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let server: ServerProcess;
  let databaseUrl: string;
  let dataDir: string;
  let proxy: TcpProxy;
  let browser: Browser;
  let sessionId: string;
  let owner: { userId: string; token: string };
  let editor: { userId: string; token: string };
  let viewer: { userId: string; token: string };

  const link = (token: string, session = sessionId) => `http://127.0.0.1:${proxy.port}/#session=${session}&token=${token}`;

  async function open(token: string, session = sessionId): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    register(() => context.close());
    const page = await context.newPage();
    await page.goto(link(token, session));
    await editorReady(page);
    return { context, page };
  }

  const layerCount = (page: Page) => onClient<number>(page, '(c) => c.layerIds().length');
  const savedText = (page: Page) => page.locator('[data-testid=saved]').textContent();

  beforeAll(async () => {
    const database = await createDatabase('editor');
    register(database.drop);
    databaseUrl = database.url;
    dataDir = tempDir(register);
    server = await startServerProcess({ transport: 'node', databaseUrl, dataDir, register });
    proxy = await startProxy('127.0.0.1', server.port, register);
    const db = openPool(databaseUrl, register);
    owner = await createActor(db, 'Olivia');
    editor = await createActor(db, 'Eddie');
    viewer = await createActor(db, 'Vera');
    const imageId = await createImage(db, owner.userId, { width: 800, height: 500 });
    sessionId = await createSession(server.url, owner.token, imageId);
    for (const [who, canEdit] of [[editor, true], [viewer, false]] as const) {
      const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
        token: owner.token,
        body: { userId: who.userId, permissions: { canEdit } },
      });
      expect(res.status).toBeLessThan(300);
    }
    browser = await launchBrowser(register);
  });

  it('serves the page, its bundle and no CDN: everything from the server itself', async () => {
    const { page } = await open(owner.token);
    const external: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(`http://127.0.0.1:${proxy.port}`) && !r.url().startsWith('ws://127.0.0.1') && !r.url().startsWith('data:')) external.push(r.url());
    });
    await page.reload();
    await editorReady(page);
    expect(external).toEqual([]);
    const js = await fetch(`${server.url}/editor.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    const etag = js.headers.get('etag')!;
    expect((await fetch(`${server.url}/editor.js`, { headers: { 'if-none-match': etag } })).status).toBe(304);
  });

  it('two people, one canvas: a rectangle drawn in one appears in the other, and cursors are seen', async () => {
    const a = await open(owner.token);
    const b = await open(editor.token);
    const before = await layerCount(b.page);
    await a.page.click('[data-tool=rectangle]');
    await dragOnCanvas(a.page, [100, 100], [260, 200]);
    await waitFor(async () => (await layerCount(b.page)) === before + 1, { what: 'the rectangle reaches the other browser', timeout: 15_000 });
    // It is drawn, not only in the document: the pixel in its middle is the tool's colour (#e6194b).
    await waitFor(
      async () => {
        const px = await b.page.evaluate(() => Array.from((document.getElementById('canvas') as HTMLCanvasElement).getContext('2d')!.getImageData(180, 150, 1, 1).data));
        return px[0] === 0xe6 && px[1] === 0x19 && px[2] === 0x4b && px[3] === 255;
      },
      { what: 'the rectangle drawn in the other browser' },
    );
    await waitFor(async () => (await savedText(a.page)) === 'All changes saved', { what: 'saved shown after the acknowledgement' });

    // A cursor moving in one page is seen, with the person's name, in the other.
    const box = (await a.page.locator('#overlay').boundingBox())!;
    await a.page.mouse.move(box.x + 300, box.y + 250);
    await waitFor(
      () => onClient<boolean>(b.page, `(c) => c.peers().some((p) => p.user.id === ${JSON.stringify(owner.userId)} && p.cursor !== null)`),
      { what: 'the cursor seen in the other browser' },
    );
    if (process.env.UPDATE_SCREENSHOTS === '1') {
      await b.page.mouse.move(box.x + 500, box.y + 120);
      await waitFor(() => onClient<boolean>(a.page, '(c) => c.peers().some((p) => p.cursor !== null)'));
      await a.page.screenshot({ path: fileURLToPath(new URL('../docs/editor-two-people.png', import.meta.url)) });
    }
  });

  it("a read-only person's edits reach nobody, and the page says why", async () => {
    const owners = await open(owner.token);
    const viewers = await open(viewer.token);
    await waitFor(async () => (await viewers.page.locator('[data-testid=role]').getAttribute('data-role')) === 'read-only', { what: 'read-only shown' });
    const before = await layerCount(owners.page);
    await viewers.page.click('[data-tool=ellipse]');
    await dragOnCanvas(viewers.page, [400, 300], [480, 380]);
    const error = viewers.page.locator('[data-testid=error]');
    await waitFor(async () => (await error.isVisible()) && /read-only/.test((await error.textContent()) ?? ''), { what: 'the page explains' });
    // The viewer's document was not changed either (the page refuses locally), and the owner's edit
    // made afterwards arrives while nothing of the viewer's does.
    await owners.page.click('[data-tool=rectangle]');
    await dragOnCanvas(owners.page, [20, 20], [60, 60]);
    await waitFor(async () => (await layerCount(viewers.page)) === before + 1, { what: 'the owner edit reaches the viewer' });
    expect(await layerCount(owners.page)).toBe(before + 1);
  });

  it('offline: keeps editing, says "not saved", and every edit arrives and survives a restart once back', async () => {
    const a = await open(editor.token);
    const b = await open(owner.token);
    proxy.cut();
    await a.context.setOffline(true);
    await waitFor(async () => (await a.page.locator('[data-testid=status]').textContent()) === 'offline', { what: 'offline shown' });
    const before = await layerCount(b.page);
    await a.page.click('[data-tool=draw]');
    await dragOnCanvas(a.page, [50, 400], [300, 450], 12);
    await a.page.click('[data-tool=rectangle]');
    await dragOnCanvas(a.page, [600, 50], [700, 150]);
    expect(await layerCount(a.page)).toBe(before + 2);
    expect(await savedText(a.page)).toBe('Not saved (offline)');
    expect(await layerCount(b.page)).toBe(before);

    await a.context.setOffline(false);
    proxy.restore();
    await waitFor(async () => (await layerCount(b.page)) === before + 2, { what: 'the offline edits arrive', timeout: 30_000 });
    await waitFor(async () => (await savedText(a.page)) === 'All changes saved', { what: 'saved once back', timeout: 30_000 });
    const ids = await onClient<string[]>(a.page, '(c) => c.layerIds()');

    // A server restart (same port behind the proxy) keeps them: they were acknowledged durably.
    const port = server.port;
    expect(await server.stop()).toBe(0);
    server = await startServerProcess({ transport: 'node', databaseUrl, dataDir, register, env: { PORT: String(port) } });
    const c = await open(owner.token);
    expect(await onClient<string[]>(c.page, '(c) => c.layerIds()')).toEqual(ids);
  });

  it('uploads an image through the ingest API; it appears, drawn, in the other browser', async () => {
    const a = await open(owner.token);
    const b = await open(editor.token);
    const before = await layerCount(b.page);
    // A 64 × 48 opaque blue PNG, made with sharp (no binary fixture).
    const png = await sharp({ create: { width: 64, height: 48, channels: 4, background: '#0000ff' } }).png().toBuffer();
    await a.page.setInputFiles('#upload', { name: 'blue.png', mimeType: 'image/png', buffer: png });
    await waitFor(async () => (await layerCount(b.page)) === before + 1, { what: 'the image layer reaches the other browser', timeout: 15_000 });
    const layer = await onClient<{ type: string; transform: number[] }>(b.page, '(c) => c.layer(c.layerIds().at(-1))');
    expect(layer.type).toBe('image');
    // Drawn from the server's file route: the pixel in the middle of where it landed is blue.
    const [sx, , , sy, ex, ey] = layer.transform as [number, number, number, number, number, number];
    const [x, y] = [Math.round(ex + 32 * sx), Math.round(ey + 24 * sy)];
    await waitFor(
      async () => {
        const px = (await b.page.evaluate(
          `Array.from(document.getElementById('canvas').getContext('2d').getImageData(${x}, ${y}, 1, 1).data)`,
        )) as number[];
        return px[0]! < 10 && px[1]! < 10 && px[2]! > 245;
      },
      { what: 'the image drawn in the other browser' },
    ).catch(async (e: Error) => {
      const dbg = await b.page.evaluate('JSON.stringify([...window.__editor.state.images.entries()].map(([k,v]) => [k, String(v)]))');
      throw new Error(`${e.message}; images: ${String(dbg)}; at ${x},${y}; layer ${JSON.stringify(layer)}`);
    });
  });

  it('the owner invites by username as read-only, lifts it, then removes them — each acts on the open page', async () => {
    const db = openPool(databaseUrl, register);
    const ivy = await createActor(db, 'Ivy');
    const owners = await open(owner.token);
    await owners.page.fill('#invite-username', `Ivy_${ivy.userId.slice(4)}`);
    await owners.page.uncheck('#invite-edit');
    await owners.page.click('#invite button');
    await waitFor(async () => (await owners.page.locator(`[data-testid=people] li[data-user-id="${ivy.userId}"]`).count()) === 1, { what: 'Ivy listed' });
    const ivys = await open(ivy.token);
    await waitFor(async () => (await ivys.page.locator('[data-testid=role]').getAttribute('data-role')) === 'read-only', { what: 'Ivy is read-only' });
    // Lifting read-only acts on her open page in place (the server's `access` message).
    await owners.page.click(`[data-testid=people] li[data-user-id="${ivy.userId}"] button:text("allow edits")`);
    await waitFor(async () => (await ivys.page.locator('[data-testid=role]').getAttribute('data-role')) === 'edit', { what: 'Ivy may edit, live' });
    // Removing her closes her connection; her page says why.
    await owners.page.click(`[data-testid=people] li[data-user-id="${ivy.userId}"] button:text("remove")`);
    await waitFor(async () => /removed/i.test((await ivys.page.locator('[data-testid=error]').textContent()) ?? ''), { what: 'Ivy told she was removed' });
  });

  it('reload keeps everything; a version saved from the page appears in the tree', async () => {
    const { page } = await open(owner.token);
    const ids = await onClient<string[]>(page, '(c) => c.layerIds()');
    await page.reload();
    await editorReady(page);
    expect(await onClient<string[]>(page, '(c) => c.layerIds()')).toEqual(ids);
    await page.fill('#version-description', 'from the page');
    await page.click('[data-testid=save-version]');
    await waitFor(async () => (await page.locator('[data-testid=versions] li', { hasText: 'from the page' }).count()) === 1, {
      what: 'the version in the tree',
      timeout: 15_000,
    });
    // Its thumbnail, rendered by the worker and signed for an <img>, shows once thumbnailReady arrives.
    await waitFor(
      () =>
        page.evaluate(() => {
          const img = [...document.querySelectorAll('[data-testid=versions] li')].find((li) => li.textContent?.includes('from the page'))?.querySelector('img');
          return !!img && img.complete && img.naturalWidth > 0;
        }),
      { what: 'the version thumbnail shown', timeout: 30_000 },
    );
  });
});

// The page is served by the server itself on both transports (the same Hono routes).
for (const c of matrix().filter((m) => m.database === 'pglite')) {
  describe.skipIf(c.skip)(`the editor page over the ${c.transport} transport${c.skip ? ` (skipped: ${c.skip})` : ''}`, () => {
    it('serves the page, its script (bundled for browsers) and the renderer fonts', async () => {
      const s = await startServerProcess({ transport: c.transport, register });
      const page = await fetch(`${s.url}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<script type="module" src="/editor.js">');
      const js = await fetch(`${s.url}/editor.js`);
      expect(js.status).toBe(200);
      expect((await js.text()).length).toBeGreaterThan(10_000);
      const css = await (await fetch(`${s.url}/editor.css`)).text();
      for (const [, file] of css.matchAll(/url\("(\/fonts\/[^"]+)"\)/g)) {
        const font = await fetch(`${s.url}${file}`);
        expect(font.status, file).toBe(200);
      }
      expect((await fetch(`${s.url}/fonts/..%2Fpackage.json`)).status).toBe(404);
    });
  });
}
