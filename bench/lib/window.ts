/** The pieces every latency scenario shares: a measured window, paced senders, the drain after it. */
import { setTimeout as sleep } from 'node:timers/promises';

/** A measured window: a send time counts when it falls in [opened, closed). */
export class MeasureWindow {
  #start = Number.POSITIVE_INFINITY;
  #end = Number.POSITIVE_INFINITY;

  open(): void {
    this.#start = performance.now();
  }

  close(): void {
    this.#end = performance.now();
  }

  has(t: number): boolean {
    return t >= this.#start && t < this.#end;
  }

  get seconds(): number {
    return (this.#end - this.#start) / 1000;
  }
}

/**
 * Calls `tick` every `periodMs`, from a random phase so that many senders spread over the period
 * instead of firing in bursts. Returns the stop.
 */
export function tickEvery(periodMs: number, tick: () => void): () => void {
  let interval: NodeJS.Timeout | undefined;
  const phase = setTimeout(() => (interval = setInterval(tick, periodMs)), Math.random() * periodMs);
  return () => {
    clearTimeout(phase);
    clearInterval(interval);
  };
}

/** Waits, polling every 50 ms, until `done()` or `ms` have passed (deliveries still in flight). */
export async function drain(done: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) await sleep(50);
}
