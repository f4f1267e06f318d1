// Waiting on a condition without timed assertions: poll `check` until it returns a value that
// is not undefined/false, or fail after a generous deadline that only guards against hangs.
import { setTimeout as sleep } from 'node:timers/promises';

export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(opts.intervalMs ?? 25);
  }
}
