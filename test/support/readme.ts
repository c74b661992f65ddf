/**
 * Runs the README's client snippets exactly as written (only the port replaced): each is extracted
 * from its `<!-- snippet:NAME -->` block, given `sessionId` and `token`, followed by a small probe
 * that reports what the provider did as JSON lines, and run as its own Node process.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './clients.ts';
import { nodeBin, repoRoot } from './uws-runtime.ts';

export const README_WS_URL = 'ws://127.0.0.1:8080/collab';

/** The code of the README's `<!-- snippet:name -->` block. */
export function readmeSnippet(name: string): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const match = new RegExp(`<!-- snippet:${name} -->\\n\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (!match) throw new Error(`README.md has no <!-- snippet:${name} --> code block`);
  return match[1]!;
}

const PRELUDE = `const sessionId = process.env.SNIPPET_SESSION_ID;
const token = process.env.SNIPPET_TOKEN;
`;

// After the snippet: report the outcome; when asked, make an edit (an entry in a map outside the
// canvas, so two people's edits never conflict) and then move the cursor — the server handles a
// connection's messages in order, so others seeing that cursor means the edit was handled first.
// Every change (document, acknowledgement, awareness) is reported again.
const PROBE = `
const outcome = await new Promise((resolve) => {
  provider.on('synced', () => resolve('synced'));
  provider.on('authenticationFailed', ({ reason }) => resolve('refused ' + reason));
});
const meta = doc.getMap('meta');
const probe = doc.getMap('probe');
const report = () => process.stdout.write(JSON.stringify({
  outcome, scope: provider.authorizedScope ?? null, width: meta.get('width') ?? null,
  edits: Object.keys(probe.toJSON()).sort(), unsynced: provider.hasUnsyncedChanges,
  cursors: [...provider.awareness.getStates().entries()]
    .filter(([id, state]) => id !== doc.clientID && state.cursor).map(([, state]) => state.cursor.x),
}) + '\\n');
report();
if (outcome !== 'synced') process.exit(0);
doc.on('update', () => setImmediate(report));
provider.on('unsyncedChanges', () => setImmediate(report));
provider.on('awarenessChange', () => setImmediate(report));
if (process.env.SNIPPET_EDIT) {
  probe.set(process.env.SNIPPET_EDIT, true);
  provider.setAwarenessField('cursor', { x: Number(process.env.SNIPPET_CURSOR ?? 1), y: 0 });
}
`;

export interface SnippetReport {
  outcome: string;
  scope: string | null;
  width: number | null;
  edits: string[];
  unsynced: boolean;
  cursors: number[];
}

export interface SnippetRun {
  reports(): SnippetReport[];
  output(): string;
  /** Resolves with the first report that satisfies `check`. */
  until(check: (r: SnippetReport) => boolean, what: string): Promise<SnippetReport>;
}

export function runSnippet(
  name: string,
  options: { wsUrl: string; sessionId: string; token: string; edit?: string; cursor?: number; nodeFlags?: string[] },
  register: (fn: () => Promise<void>) => void,
): SnippetRun {
  const code = readmeSnippet(name);
  if (!code.includes(README_WS_URL)) throw new Error(`snippet ${name} does not use ${README_WS_URL}`);
  const dir = mkdtempSync(join(tmpdir(), 'snippet-'));
  register(async () => rmSync(dir, { recursive: true, force: true }));
  // Bare imports ('@hocuspocus/provider', 'ws', 'yjs') resolve from the repository's packages.
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
  const file = join(dir, `${name}.ts`);
  writeFileSync(file, PRELUDE + code.replaceAll(README_WS_URL, options.wsUrl) + PROBE);
  const child = spawn(nodeBin, [...(options.nodeFlags ?? []), file], {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      SNIPPET_SESSION_ID: options.sessionId,
      SNIPPET_TOKEN: options.token,
      ...(options.edit ? { SNIPPET_EDIT: options.edit } : {}),
      ...(options.cursor !== undefined ? { SNIPPET_CURSOR: String(options.cursor) } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  register(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const reports = () =>
    out
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as SnippetReport);
  return {
    reports,
    output: () => out,
    until: (check, what) =>
      waitFor(() => reports().find(check), { timeout: 30_000, what: `${name} snippet: ${what} (output: ${out.slice(-500)})` }),
  };
}
