/**
 * The demo editor page at `/` (web/): the HTML, its stylesheet, the script bundled by esbuild
 * from web/editor.ts (with the typed client and shared/ — which therefore must stay free of
 * Node built-ins: the browser platform build fails on them), and the fonts the server's renderer
 * uses (renderer/fonts), so the page draws text with the same faces. Nothing comes from a CDN:
 * the page works offline on loopback.
 *
 * The bundle is built once per process, on the first request (esbuild takes ~0.2 s), and kept in
 * memory with a content hash as its ETag.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hono } from 'hono';
import { AppError } from '../../shared/errors.ts';
import type { Env } from './json.ts';

const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));
const FONT_DIR = fileURLToPath(new URL('../../renderer/fonts/', import.meta.url));

interface Asset {
  body: string | Uint8Array;
  type: string;
  etag: string;
}

const etagOf = (body: string | Uint8Array) => `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;

/** Bundles web/editor.ts for browsers (ES2022 modules, minified, with a source map inline in dev). */
export async function buildEditorBundle(): Promise<string> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: [join(WEB_DIR, 'editor.ts')],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

/** `@font-face` rules for every shipped font file, named as the renderer names them. */
async function fontsCss(): Promise<string> {
  const files = await readdir(FONT_DIR)
    .then((all) => all.filter((f) => /\.(ttf|otf|woff2?)$/.test(f)))
    .catch(() => [] as string[]); // no fonts shipped: the page falls back to the browser's
  return files
    .map((file) => {
      const m = /^(.+?)(?:-(Regular|Bold|Italic|BoldItalic|Subset))?\.\w+$/.exec(file)!;
      const family = m[1]!.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/CJK(\w+)/, 'CJK $1').replace(/ CJK \w+$/, ' CJK');
      const style = m[2] ?? 'Regular';
      return `@font-face{font-family:"${family}";src:url("/fonts/${file}");font-weight:${/Bold/.test(style) ? 700 : 400};font-style:${/Italic/.test(style) ? 'italic' : 'normal'};font-display:block}`;
    })
    .join('\n');
}

export function registerWebRoutes(app: Hono<Env>): void {
  const cache = new Map<string, Promise<Asset>>();
  const asset = (name: string, load: () => Promise<Asset>) => {
    let entry = cache.get(name);
    if (!entry) {
      entry = load();
      cache.set(name, entry);
      entry.catch(() => cache.delete(name)); // a failed build is retried on the next request
    }
    return entry;
  };
  const text = async (file: string, type: string): Promise<Asset> => {
    const body = await readFile(join(WEB_DIR, file), 'utf8');
    return { body, type, etag: etagOf(body) };
  };

  const serve = (name: string, load: () => Promise<Asset>, cacheControl = 'no-cache') =>
    app.get(name, async (c) => {
      const a = await asset(name, load);
      if (c.req.header('if-none-match') === a.etag) return c.body(null, 304, { etag: a.etag });
      return c.body(a.body as string, 200, { 'content-type': a.type, etag: a.etag, 'cache-control': cacheControl });
    });

  serve('/', () => text('index.html', 'text/html; charset=utf-8'));
  serve('/editor.css', async () => {
    const body = `${await fontsCss()}\n${await readFile(join(WEB_DIR, 'editor.css'), 'utf8')}`;
    return { body, type: 'text/css; charset=utf-8', etag: etagOf(body) };
  });
  serve('/editor.js', async () => {
    const body = await buildEditorBundle();
    return { body, type: 'text/javascript; charset=utf-8', etag: etagOf(body) };
  });
  app.get('/fonts/:file', async (c) => {
    const file = c.req.param('file');
    if (!/^[A-Za-z0-9-]+\.(ttf|otf|woff2?)$/.test(file)) throw new AppError('not_found');
    const a = await asset(`/fonts/${file}`, async () => {
      const body = await readFile(join(FONT_DIR, file)).catch(() => {
        throw new AppError('not_found');
      });
      return { body: new Uint8Array(body), type: file.endsWith('otf') ? 'font/otf' : file.endsWith('ttf') ? 'font/ttf' : 'font/woff2', etag: etagOf(body) };
    });
    if (c.req.header('if-none-match') === a.etag) return c.body(null, 304, { etag: a.etag });
    return c.body(a.body as Uint8Array<ArrayBuffer>, 200, { 'content-type': a.type, etag: a.etag, 'cache-control': 'public, max-age=86400' });
  });
}
