import type { ServerProcess } from './server-process.ts';

/** One sample of a metric from a node's `/metrics` (the first series of that name). */
export async function metric(node: Pick<ServerProcess, 'url'>, name: string): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name} in /metrics`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}
