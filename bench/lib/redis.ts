/**
 * The bench's side of Redis: a minimal RESP2 client over one loopback socket (the bench only
 * needs INFO, SCAN and DEL, so it does not depend on whichever Redis client the server uses), the
 * counters of `INFO` it reports (CPU, commands, network bytes), and removal of a run's keys.
 */
import { connect, type Socket } from 'node:net';

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

export type Reply = string | number | null | Reply[];

/** Parses one RESP2 reply at `at`; undefined when the buffer does not hold all of it yet. */
function parse(buf: Buffer, at: number): { value: Reply | Error; next: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol === -1) return undefined;
  const head = buf.toString('utf8', at + 1, eol);
  const after = eol + 2;
  switch (String.fromCharCode(buf[at]!)) {
    case '+':
      return { value: head, next: after };
    case '-':
      return { value: new Error(`redis: ${head}`), next: after };
    case ':':
      return { value: Number(head), next: after };
    case '$': {
      const length = Number(head);
      if (length < 0) return { value: null, next: after };
      if (buf.length < after + length + 2) return undefined;
      return { value: buf.toString('utf8', after, after + length), next: after + length + 2 };
    }
    case '*': {
      const count = Number(head);
      if (count < 0) return { value: null, next: after };
      const items: Reply[] = [];
      let next = after;
      for (let i = 0; i < count; i += 1) {
        const item = parse(buf, next);
        if (!item) return undefined;
        if (item.value instanceof Error) return item;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      throw new Error(`redis: unexpected reply type ${JSON.stringify(String.fromCharCode(buf[at]!))}`);
  }
}

export interface RedisConnection {
  command(...args: string[]): Promise<Reply>;
  close(): void;
}

/** One connection; replies come back in order (no pipelining beyond what the caller awaits). */
export async function openRedis(url = REDIS_URL, timeoutMs = 5_000): Promise<RedisConnection> {
  const u = new URL(url);
  const socket: Socket = connect({ host: u.hostname, port: Number(u.port || 6379) });
  socket.setTimeout(timeoutMs);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
    socket.once('timeout', () => reject(new Error(`redis: no connection to ${url} within ${timeoutMs} ms`)));
  });
  const waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  let buffer = Buffer.alloc(0);
  const failAll = (error: Error) => {
    for (const w of waiting.splice(0)) w.reject(error);
  };
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const reply = parse(buffer, 0);
      if (!reply) return;
      buffer = buffer.subarray(reply.next);
      const w = waiting.shift();
      if (!w) continue; // nothing asked for it: cannot happen on a request/reply connection
      if (reply.value instanceof Error) w.reject(reply.value);
      else w.resolve(reply.value);
    }
  });
  socket.on('timeout', () => {
    if (waiting.length > 0) {
      failAll(new Error(`redis: no reply within ${timeoutMs} ms`));
      socket.destroy();
    }
  });
  socket.on('error', failAll);
  socket.on('close', () => failAll(new Error('redis: connection closed')));
  if (u.password) {
    const auth = u.username ? ['AUTH', decodeURIComponent(u.username), decodeURIComponent(u.password)] : ['AUTH', decodeURIComponent(u.password)];
    await send(auth);
  }
  function send(args: string[]): Promise<Reply> {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
    return new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      socket.write(parts.join(''));
    });
  }
  return { command: (...args) => send(args), close: () => socket.destroy() };
}

/** The `INFO` fields the cross-node bench reports, summed/read from one snapshot. */
export interface RedisCounters {
  version: string;
  /** used_cpu_sys + used_cpu_user: CPU seconds of the whole Redis process since it started. */
  cpuSeconds: number;
  /** cmdstat_publish calls. */
  publishes: number;
  totalCommands: number;
  netInputBytes: number;
  netOutputBytes: number;
}

export async function redisCounters(redis: RedisConnection): Promise<RedisCounters> {
  const text = String(await redis.command('INFO', 'all'));
  const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(text)?.[1]?.trim();
  const num = (name: string) => Number(field(name) ?? Number.NaN);
  const publishes = /^cmdstat_publish:calls=(\d+)/m.exec(text)?.[1];
  return {
    version: field('redis_version') ?? '?',
    cpuSeconds: num('used_cpu_sys') + num('used_cpu_user'),
    publishes: publishes ? Number(publishes) : 0,
    totalCommands: num('total_commands_processed'),
    netInputBytes: num('total_net_input_bytes'),
    netOutputBytes: num('total_net_output_bytes'),
  };
}

/** `SCAN` + `DEL` every key starting with `prefix` (bounded: at most `maxRounds` SCAN calls); the count deleted. */
export async function deleteKeysWithPrefix(redis: RedisConnection, prefix: string, maxRounds = 10_000): Promise<number> {
  if (!/^[A-Za-z0-9_.:-]+$/.test(prefix)) throw new Error(`refusing to delete keys by an unusual prefix: ${prefix}`);
  let cursor = '0';
  let deleted = 0;
  for (let round = 0; round < maxRounds; round += 1) {
    const reply = (await redis.command('SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000')) as [string, string[]];
    cursor = reply[0];
    if (reply[1].length > 0) deleted += Number(await redis.command('DEL', ...reply[1]));
    if (cursor === '0') return deleted;
  }
  throw new Error(`redis: SCAN for ${prefix}* did not finish in ${maxRounds} rounds`);
}
