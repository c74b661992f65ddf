/**
 * Writes one marked section of bench/RESULTS.md, leaving every other section as it is (other
 * benchmarks own theirs). Read-modify-write happens at once and the file is replaced by rename,
 * so a reader never sees half a file.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

export function writeSection(path: string, name: string, body: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const section = `${start}\n${body.trim()}\n${end}`;
  const current = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n';
  const from = current.indexOf(start);
  const to = current.indexOf(end);
  let next: string;
  if (from !== -1 && to > from) {
    next = current.slice(0, from) + section + current.slice(to + end.length);
  } else {
    next = `${current.replace(/\s*$/, '')}\n\n${section}\n`;
  }
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, next);
  renameSync(tmp, path);
}
