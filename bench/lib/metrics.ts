/**
 * Reads our server's own Prometheus histograms (`GET /metrics`) where it has them: the time each
 * group commit took and the time an acknowledgement waited for its commit. Stock Hocuspocus has no
 * such endpoint; then everything is undefined.
 */

export interface CommitMetrics {
  commitSum: number;
  commitCount: number;
  ackWaitSum: number;
  ackWaitCount: number;
}

function value(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}

export async function scrapeCommitMetrics(httpUrl: string): Promise<CommitMetrics | undefined> {
  try {
    const response = await fetch(`${httpUrl}/metrics`, { signal: AbortSignal.timeout(2_000) });
    if (!response.ok) return undefined;
    const text = await response.text();
    const commitSum = value(text, 'imageflow_update_log_commit_seconds_sum');
    const commitCount = value(text, 'imageflow_update_log_commit_seconds_count');
    const ackWaitSum = value(text, 'imageflow_ack_wait_seconds_sum');
    const ackWaitCount = value(text, 'imageflow_ack_wait_seconds_count');
    if (commitSum === undefined || commitCount === undefined || ackWaitSum === undefined || ackWaitCount === undefined) return undefined;
    return { commitSum, commitCount, ackWaitSum, ackWaitCount };
  } catch {
    return undefined; // no metrics endpoint (stock) or it failed: the column stays empty
  }
}

/** Mean commit and acknowledgement wait in ms between two scrapes, with the batch count. */
export function commitDelta(a: CommitMetrics | undefined, b: CommitMetrics | undefined) {
  if (!a || !b || b.commitCount <= a.commitCount || b.ackWaitCount <= a.ackWaitCount) return undefined;
  return {
    commitMeanMs: ((b.commitSum - a.commitSum) / (b.commitCount - a.commitCount)) * 1000,
    batches: b.commitCount - a.commitCount,
    ackWaitMeanMs: ((b.ackWaitSum - a.ackWaitSum) / (b.ackWaitCount - a.ackWaitCount)) * 1000,
  };
}
