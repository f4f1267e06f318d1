// Waiting for a condition (a server being up, a process gone): poll `check` until it returns a
// value that is not undefined/false. The deadline is only a guard against hangs: callers never
// rely on the timing. The tests' waitFor (test/helpers/wait.ts) is this with longer defaults.
import { setTimeout as sleep } from 'node:timers/promises';

export async function pollUntil<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(intervalMs);
  }
}
