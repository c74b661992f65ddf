/**
 * A real Redis Cluster on loopback for one test file: 3 masters + 3 replicas (`redis-server
 * --cluster-enabled yes`, joined by `redis-cli --cluster create … --cluster-replicas 1`), nothing
 * persisted, in a temporary directory, torn down (processes killed by their pid, directory removed)
 * by `register`. Ports are picked at random and checked free, together with each one's cluster bus
 * port (+10000), so two test files never clash. `stop(port)` kills one node (a master failover).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitFor } from './clients.ts';

export interface RedisCluster {
  /** The six nodes' ports (masters first, as created). */
  ports: number[];
  /** `host:port,host:port,…` of every node (the seeds a client needs). */
  seeds: string;
  /** Kill one node with SIGKILL (its replica, or nobody, takes over). */
  stop(port: number): void;
  /** `redis-cli -p <port> <args…>`, its stdout. */
  cli(port: number, ...args: string[]): string;
}

/** redis-server and redis-cli are on PATH (the Debian packages; .ci/run installs them). */
export function clusterAvailable(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0 && spawnSync('redis-cli', ['--version']).status === 0;
}

function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function freePorts(count: number): Promise<number[]> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 2_000) * 5;
    const ports = Array.from({ length: count }, (_, i) => base + i);
    const checks = await Promise.all(ports.flatMap((p) => [free(p), free(p + 10_000)]));
    if (checks.every(Boolean)) return ports;
  }
  throw new Error('no free block of ports for a Redis Cluster');
}

export async function startRedisCluster(register: (fn: () => Promise<void>) => void): Promise<RedisCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'imageflow-cluster-'));
  const ports = await freePorts(6);
  const children = new Map<number, ChildProcess>();
  register(async () => {
    for (const child of children.values()) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  for (const port of ports) {
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
        // Fail over within about two seconds, whatever the replica's data age.
        '--cluster-node-timeout', '1000', '--cluster-replica-validity-factor', '0', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    children.set(port, child);
  }
  const cli = (port: number, ...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout ?? '';
  await waitFor(() => ports.every((p) => cli(p, 'PING').trim() === 'PONG'), { timeout: 10_000, what: 'cluster nodes answering' });
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { encoding: 'utf8' });
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
  await waitFor(() => ports.every((p) => cli(p, 'CLUSTER', 'INFO').includes('cluster_state:ok')), { timeout: 20_000, what: 'cluster_state:ok on every node' });
  // A replica takes over only once it has synced with its master.
  await waitFor(
    () => ports.every((p) => {
      const info = cli(p, 'INFO', 'replication');
      return info.includes('role:master') || info.includes('master_link_status:up');
    }),
    { timeout: 20_000, what: 'every replica in sync' },
  );
  return {
    ports,
    seeds: ports.map((p) => `127.0.0.1:${p}`).join(','),
    stop: (port) => {
      children.get(port)?.kill('SIGKILL');
      children.delete(port);
    },
    cli,
  };
}

/** A Redis topology a multi-node test runs against: the environment its servers get. */
export interface RedisTopology {
  name: string;
  /** The servers' Redis variables (the cluster is started on first use, torn down by `register`). */
  env(): Promise<Record<string, string>>;
}

/**
 * The topologies a multi-node scenario runs against (`describe.each(redisTopologies(register))`):
 * the shared Redis, and — where redis-server is installed — a real cluster of the test file's own.
 */
export function redisTopologies(register: (fn: () => Promise<void>) => void): RedisTopology[] {
  let cluster: Promise<RedisCluster> | undefined;
  const single: RedisTopology = { name: 'one Redis', env: () => Promise.resolve({ REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }) };
  if (!clusterAvailable()) return [single];
  return [
    single,
    {
      name: 'a Redis Cluster',
      env: async () => {
        cluster ??= startRedisCluster(register);
        return { REDIS_CLUSTER_NODES: (await cluster).seeds };
      },
    },
  ];
}
