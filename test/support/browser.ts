/**
 * A real browser for the page tests: Debian's Chromium driven by playwright-core. Where no
 * Chromium is installed the tests are reported as skipped with the reason (never silently passed);
 * `.ci/run` installs it with apt when missing.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

export function chromiumPath(): string | undefined {
  return CANDIDATES.find((p): p is string => !!p && existsSync(p));
}

/** Why the browser tests cannot run here, or undefined when they can. */
export function browserSkipReason(): string | undefined {
  return chromiumPath() ? undefined : 'no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)';
}

export async function launchBrowser(register: (fn: () => Promise<void>) => void): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: chromiumPath()!,
    headless: true,
    // As root (CI) Chromium needs --no-sandbox; the fixed scale factor keeps pixels comparable.
    args: ['--no-sandbox', '--force-device-scale-factor=1', '--disable-gpu', '--font-render-hinting=none'],
  });
  register(() => browser.close());
  return browser;
}

/** The editor's test handle (`window.__editor`, set by web/editor.ts). */
export async function editorReady(page: Page, timeout = 30_000): Promise<void> {
  await page.waitForFunction(
    () => {
      const e = (window as unknown as { __editor?: { client: { saved: boolean; provider: { synced: boolean } } } }).__editor;
      return !!e && e.client.provider.synced;
    },
    undefined,
    { timeout },
  );
}

/** Evaluates `fn` against the page's CanvasClient. */
export function onClient<T>(page: Page, fn: string): Promise<T> {
  return page.evaluate(`(() => { const client = window.__editor.client; return (${fn})(client); })()`) as Promise<T>;
}

/** Drags on the overlay from (x0, y0) to (x1, y1), in canvas pixels. */
export async function dragOnCanvas(page: Page, from: [number, number], to: [number, number], steps = 8): Promise<void> {
  const box = (await page.locator('#overlay').boundingBox())!;
  const scale = (await page.evaluate('window.__editor.state.scale')) as number;
  const at = ([x, y]: [number, number]) => [box.x + x * scale, box.y + y * scale] as const;
  await page.mouse.move(...at(from));
  await page.mouse.down();
  await page.mouse.move(...at(to), { steps });
  await page.mouse.up();
}
