/**
 * Scenario 4, memory: server RSS with idle clients connected and synced, over a number of
 * documents, against the same process's RSS just before they connected. Connected in two steps —
 * first one client per document (which loads the documents), then the rest — so the cost of a
 * connection can also be told apart from the cost of loading a document.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connectMany } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import { rssBytes } from '../lib/procfs.ts';
import type { Target } from '../lib/targets.ts';

export interface MemoryResult {
  connections: number;
  documents: number;
  baselineBytes: number;
  /** RSS with one client per document (every document loaded). */
  documentsLoadedBytes: number;
  loadedBytes: number;
  /** (RSS with every client − baseline) / connections: documents included. */
  perConnectionBytes: number;
  /** (RSS with every client − RSS with one per document) / the clients added in the second step. */
  marginalPerConnectionBytes: number;
}

/** Median of three RSS samples `gapMs` apart (RSS moves with GC; one sample is noisy). */
async function settledRss(pid: number, gapMs = 400): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 3; i += 1) {
    if (i > 0) await sleep(gapMs);
    samples.push(rssBytes(pid));
  }
  return samples.sort((a, b) => a - b)[1]!;
}

export async function runMemory(
  target: Target,
  server: ServerChild,
  options: { connections: number; documents: number },
): Promise<MemoryResult> {
  const docs = await target.newDocuments(server, options.documents);
  await sleep(1_000);
  const baselineBytes = await settledRss(server.pid);
  const names = Array.from({ length: options.connections }, (_, i) => docs[i % docs.length]!);
  const clients = await connectMany(server.wsUrl, names.slice(0, docs.length), target.token());
  try {
    await sleep(1_000);
    const documentsLoadedBytes = await settledRss(server.pid);
    clients.push(...(await connectMany(server.wsUrl, names.slice(docs.length), target.token())));
    await sleep(1_500);
    const loadedBytes = await settledRss(server.pid);
    return {
      connections: options.connections,
      documents: options.documents,
      baselineBytes,
      documentsLoadedBytes,
      loadedBytes,
      perConnectionBytes: (loadedBytes - baselineBytes) / options.connections,
      marginalPerConnectionBytes: (loadedBytes - documentsLoadedBytes) / (options.connections - docs.length),
    };
  } finally {
    for (const c of clients) c.destroy();
  }
}
