/**
 * The fonts text layers use: only the OFL fonts shipped in renderer/fonts/ (Noto Sans, Noto Serif,
 * Noto Sans Arabic/Hebrew/Devanagari/Thai, a Noto Sans CJK SC subset — see renderer/fonts/OFL.txt).
 *
 * libvips renders text with Pango through fontconfig, which reads its configuration once per
 * process, at the first text render. `useShippedFonts()` writes a fontconfig file that lists only
 * the shipped folder (no system directories, no user fonts) and points FONTCONFIG_FILE at it, so
 * output is the same on every machine whatever fonts it has installed. It must run in the main
 * thread before anything in the process renders text: `renderer/index.ts` and `renderer/pool.ts`
 * call it when they are imported (a worker thread's `process.env` is its own copy, so the pool sets
 * it in the main thread, before starting workers).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';

export const FONT_DIR = join(import.meta.dirname, 'fonts');

/** The family used when a layer names one that is not shipped (fontconfig falls back per glyph). */
export const DEFAULT_FAMILY = 'Noto Sans';

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function fontconfigXml(cacheDir: string): string {
  const prefer = (families: string[]) => families.map((f) => `<family>${f}</family>`).join('');
  const fallback = ['Noto Sans CJK SC', 'Noto Sans Arabic', 'Noto Sans Hebrew', 'Noto Sans Devanagari', 'Noto Sans Thai'];
  return `<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <dir>${escapeXml(FONT_DIR)}</dir>
  <cachedir>${escapeXml(cacheDir)}</cachedir>
  <alias binding="same"><family>sans-serif</family><prefer>${prefer(['Noto Sans', ...fallback])}</prefer></alias>
  <alias binding="same"><family>serif</family><prefer>${prefer(['Noto Serif', ...fallback])}</prefer></alias>
  <alias binding="same"><family>monospace</family><prefer>${prefer(['Noto Sans', ...fallback])}</prefer></alias>
  <alias binding="same"><family>Noto Sans</family><default>${prefer(fallback)}</default></alias>
  <alias binding="same"><family>Noto Serif</family><default>${prefer(fallback)}</default></alias>
  <!-- Any family that is not shipped resolves to sans-serif, i.e. Noto Sans. -->
  <match target="pattern"><test qual="all" name="family" compare="not_eq"><string>sans-serif</string></test><edit name="family" mode="append_last"><string>sans-serif</string></edit></match>
  <config><rescan><int>0</int></rescan></config>
</fontconfig>
`;
}

let configured: string | undefined;

/** Points fontconfig at the shipped fonts only; returns the configuration file's path. */
export function useShippedFonts(): string {
  if (configured) return configured;
  const dir = join(tmpdir(), `imageflow-fontconfig-${process.getuid?.() ?? 'user'}`);
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const file = join(dir, 'fonts.conf');
  writeFileSync(file, fontconfigXml(join(dir, 'cache')));
  if (isMainThread) process.env.FONTCONFIG_FILE = file;
  configured = file;
  return file;
}

/** A family name safe to put in Pango markup (letters, digits, spaces, `-`, `_`, `.`), or the default. */
export function safeFamily(family: string): string {
  const trimmed = family.trim();
  return /^[\p{L}\p{N} _.-]{1,100}$/u.test(trimmed) ? trimmed : DEFAULT_FAMILY;
}
