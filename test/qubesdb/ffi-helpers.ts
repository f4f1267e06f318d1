// Collects a watch's events in the background so a test can take them in order.
import type { QubesDBWatch } from '@qubes-net/qubesdb';

export interface EventStream {
  /** The next n events (waits for them; fails after a hang guard with what did arrive). */
  take(n: number): Promise<string[]>;
  /** Events received and not yet taken. */
  readonly pending: readonly string[];
}

export function nextEvents(w: QubesDBWatch, hangGuardMs = 20_000): EventStream {
  const got: string[] = [];
  let notify: (() => void) | undefined;
  let ended = false;
  void (async () => {
    for await (const p of w) {
      got.push(p);
      notify?.();
    }
    ended = true;
    notify?.();
  })();
  return {
    get pending() {
      return got;
    },
    async take(n: number): Promise<string[]> {
      const deadline = Date.now() + hangGuardMs;
      while (got.length < n) {
        if (ended) throw new Error(`watch ended after ${JSON.stringify(got)}, wanted ${n} events`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`only got ${JSON.stringify(got)}, wanted ${n} events`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          notify = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        notify = undefined;
      }
      return got.splice(0, n);
    },
  };
}
