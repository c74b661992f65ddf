/**
 * Renders the README's error table from the registry in shared/errors.ts.
 * `node scripts/readme-errors.ts --write` rewrites the table in README.md; test/errors.test.ts
 * fails when the README and the registry disagree.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { errors } from '../shared/errors.ts';

export const START = '<!-- errors:start -->';
export const END = '<!-- errors:end -->';

export function renderErrorTable(): string {
  const rows = Object.entries(errors).map(([code, e]) => {
    const close = 'closeCode' in e ? String(e.closeCode) : '—';
    return `| \`${code}\` | ${e.status} | ${close} | ${e.message} |`;
  });
  return [START, '| code | HTTP | WebSocket | meaning |', '|---|---|---|---|', ...rows, END].join('\n');
}

export function readmeTable(readme: string): string | undefined {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  return start >= 0 && end > start ? readme.slice(start, end + END.length) : undefined;
}

if (process.argv.includes('--write')) {
  const file = new URL('../README.md', import.meta.url);
  const readme = readFileSync(file, 'utf8');
  const current = readmeTable(readme);
  if (!current) throw new Error('README.md has no error table markers');
  writeFileSync(file, readme.replace(current, renderErrorTable()));
}
