/**
 * Where the uWebSockets.js transport can run in tests. Its binaries need glibc >= 2.38; these
 * machines have Debian 12 (2.36). Where it does not load natively, the test tooling makes a
 * Debian 13 root with debootstrap (as root, ~25 s, cached outside the repo) and starts the
 * npm-installed Node 24 through that root's dynamic loader and libraries — no chroot or mounts,
 * so the server sees the repo at its real path and reaches PostgreSQL on loopback as usual.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const nodeBin = join(repoRoot, 'node_modules/.bin/node');
export const UWS_ROOT = process.env.UWS_ROOT ?? '/var/cache/imageflow/trixie-root';

export type UwsLauncher = { ok: true; prefix: string[]; how: string } | { ok: false; reason: string };

function loader(root: string): string[] {
  return [
    join(root, 'lib64/ld-linux-x86-64.so.2'),
    '--library-path',
    [join(root, 'lib/x86_64-linux-gnu'), join(root, 'usr/lib/x86_64-linux-gnu')].join(':'),
  ];
}

function loadsWith(prefix: string[]): boolean {
  const [cmd, ...args] = [...prefix, nodeBin];
  const probe = spawnSync(cmd!, [...args, '-e', "require('uWebSockets.js')"], { cwd: repoRoot, encoding: 'utf8', timeout: 30_000 });
  return probe.status === 0;
}

/** The Debian mirror apt already uses here (debootstrap reaches only the mirrors apt can). */
function debianMirror(): string {
  const files = ['/etc/apt/sources.list', ...safeList('/etc/apt/sources.list.d').map((f) => join('/etc/apt/sources.list.d', f))];
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    const uri = /^URIs:\s*(\S+\/debian)\/?\s*$/m.exec(text)?.[1] ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\/?\s/m.exec(text)?.[1];
    if (uri) return uri;
  }
  return 'http://deb.debian.org/debian';
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Makes the Debian 13 root if it is missing and this machine can; returns why not otherwise. */
export function ensureUwsRoot(): string | null {
  if (existsSync(join(UWS_ROOT, 'lib64/ld-linux-x86-64.so.2')) && existsSync(join(UWS_ROOT, '.complete'))) return null;
  if (process.getuid?.() !== 0) return 'not root: cannot debootstrap a Debian 13 root';
  const debootstrap = ['/usr/sbin/debootstrap', '/sbin/debootstrap'].find((p) => existsSync(p));
  if (!debootstrap) return 'debootstrap is not installed (apt-get install debootstrap)';
  try {
    execFileSync('rm', ['-rf', UWS_ROOT]);
    execFileSync(debootstrap, ['--variant=minbase', 'trixie', UWS_ROOT, debianMirror()], { stdio: 'pipe', timeout: 600_000 });
    execFileSync('touch', [join(UWS_ROOT, '.complete')]);
    return null;
  } catch (error) {
    return `debootstrap of Debian 13 failed: ${(error as Error).message.split('\n')[0]}`;
  }
}

let cached: UwsLauncher | undefined;

/** How to start a Node process that can load uWebSockets.js, or why none can be had here. */
export function uwsLauncher(): UwsLauncher {
  if (cached) return cached;
  if (loadsWith([])) return (cached = { ok: true, prefix: [], how: 'native' });
  if (!existsSync(join(UWS_ROOT, '.complete'))) {
    return (cached = { ok: false, reason: `uWebSockets.js does not load natively and no Debian 13 root exists at ${UWS_ROOT}` });
  }
  const prefix = loader(UWS_ROOT);
  if (loadsWith(prefix)) return (cached = { ok: true, prefix, how: `Debian 13 loader at ${UWS_ROOT}` });
  return (cached = { ok: false, reason: `uWebSockets.js does not load even with the Debian 13 root at ${UWS_ROOT}` });
}
