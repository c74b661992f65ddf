/**
 * The Node flags the server runs with (server/node-flags.ts) are the ones `npm start` passes and
 * the ones the tests' launcher passes (so the bench, which shares it, measures what runs).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { SERVER_NODE_FLAGS } from '../server/node-flags.ts';
import { startServerProcess } from './support/server-process.ts';
import { repoRoot } from './support/uws-runtime.ts';

describe('the Node flags of the server', () => {
  it('are what `npm start` passes', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe(['node', ...SERVER_NODE_FLAGS, 'server/main.ts'].join(' '));
  });

  it('reach the running server, which logs them when it listens', async () => {
    const server = await startServerProcess({ transport: 'node', register: (teardown) => onTestFinished(teardown) });
    const line = server
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; nodeFlags?: string[] })
      .find((entry) => entry.msg?.startsWith('listening'));
    expect(line?.nodeFlags).toEqual(expect.arrayContaining([...SERVER_NODE_FLAGS]));
  });
});
