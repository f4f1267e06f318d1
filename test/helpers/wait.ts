// Waiting on a condition without timed assertions: poll `check` until it returns a value that
// is not undefined/false, or fail after a generous deadline that only guards against hangs.
// netns's pollUntil does the polling; the tests only wait longer by default.
import { pollUntil } from '@qubes-net/netns';

export function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  return pollUntil(what, check, opts.timeoutMs ?? 20_000, opts.intervalMs ?? 25);
}
