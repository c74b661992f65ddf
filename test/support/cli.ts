/** Runs the project's commands (`server/main.ts`, `scripts/*.ts`) as an operator would, as child processes. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { nodeBin, repoRoot } from './uws-runtime.ts';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `script` relative to the repository (e.g. `scripts/users.ts`); `env` is all the environment it gets (plus PATH). */
export function runCommand(script: string, args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      nodeBin,
      [join(repoRoot, script), ...args],
      { cwd: repoRoot, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: timeoutMs, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The `key: value` lines a command printed (e.g. `userId:   usr_…`). */
export function printedFields(stdout: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^(\w+):\s+(\S+)$/.exec(line);
    if (m) fields[m[1]!] = m[2]!;
  }
  return fields;
}
