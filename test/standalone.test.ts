/**
 * The repository stands alone (docs/CONTRACT.md): no file in it reads or cites anything outside it.
 * Every relative path written in a source, test, script or document resolves inside the repository,
 * nothing names an absolute path of the machine it was written on, and the reference documents the
 * code cites (the contract, the stack notes, the seed schema) are here under docs/.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './support/uws-runtime.ts';

const SKIP_DIRS = new Set(['node_modules', '.git', 'data', '.data-test', 'coverage']);
const TEXT = /\.(ts|js|mjs|cjs|md|sql|json|yml|yaml|sh|txt)$|^run$/;

/** The project's own text files (the seed documents under docs/seeds are quoted as written). */
function projectFiles(dir = repoRoot): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir)) {
    if (SKIP_DIRS.has(entry)) continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) {
      if (relative(repoRoot, path) === join('docs', 'seeds')) continue;
      files.push(...projectFiles(path));
    } else if (TEXT.test(entry) && entry !== 'package-lock.json') {
      files.push(path);
    }
  }
  return files;
}

/** `../x/y` paths written in a file (imports, URLs, prose), with the line they are on. */
function relativePaths(text: string): Array<{ path: string; line: number }> {
  const found: Array<{ path: string; line: number }> = [];
  text.split('\n').forEach((line, i) => {
    for (const m of line.matchAll(/(?<![\w./-])((?:\.\.\/)+(?:[\w.@-]+\/?)*)/g)) found.push({ path: m[1]!, line: i + 1 });
  });
  return found;
}

const inside = (path: string) => path === repoRoot.replace(/\/$/, '') || path.startsWith(repoRoot.endsWith(sep) ? repoRoot : repoRoot + sep);

describe('the repository stands alone', () => {
  const files = projectFiles();

  it('finds the project files (guard against a vacuous pass)', () => {
    const names = files.map((f) => relative(repoRoot, f));
    expect(names).toEqual(expect.arrayContaining(['README.md', join('server', 'main.ts'), join('test', 'migrations.test.ts'), join('.ci', 'run')]));
    expect(names.length).toBeGreaterThan(50);
  });

  it('has no relative path that climbs above the repository', () => {
    const outside: string[] = [];
    for (const file of files) {
      for (const { path, line } of relativePaths(readFileSync(file, 'utf8'))) {
        if (!inside(resolve(dirname(file), path))) outside.push(`${relative(repoRoot, file)}:${line}: ${path}`);
      }
    }
    expect(outside).toEqual([]);
  });

  it('names no absolute path of the machine it was written on', () => {
    const absolute: string[] = [];
    for (const file of files) {
      readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
        if (/(^|[\s'"`(])\/(work|tmp\/x|home|root)\//.test(line)) absolute.push(`${relative(repoRoot, file)}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(absolute).toEqual([]);
  });

  it('cites the contract and the stack notes by their copies under docs/, which exist', () => {
    const loose: string[] = [];
    for (const file of files) {
      // docs/ holds the documents themselves; this file spells the names it looks for.
      if (relative(repoRoot, file).startsWith(`docs${sep}`) || file === import.meta.filename) continue;
      readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
        for (const m of line.matchAll(/(\S*)(STACK-NOTES|CONTRACT\.md|CONTRACT ")/g)) {
          const cited = `${m[1]}${m[2]}`;
          if (!/(^|[^\w])docs\/(STACK-NOTES|CONTRACT)/.test(cited)) loose.push(`${relative(repoRoot, file)}:${i + 1}: ${cited}`);
        }
      });
    }
    expect(loose).toEqual([]);
    for (const doc of ['docs/CONTRACT.md', 'docs/STACK-NOTES.md', 'docs/seeds/000_a55dfd578cc8c3da.txt']) {
      expect(existsSync(join(repoRoot, doc)), doc).toBe(true);
    }
  });
});
