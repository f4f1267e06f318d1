// One apply or remove at a time per network namespace: udev, the watcher and an admin may start
// `qubes-net-guest apply` together, and two writers planning from the same kernel state would
// undo each other. The lock is an abstract unix socket name: bound while held, released by the
// kernel when the process exits however it exits (no stale lock file), and scoped to the
// network namespace, as the uplink is.
import { createServer, type Server } from 'node:net';

export const APPLY_LOCK_NAME = 'qubes-net-guest-uplink';
const RETRY_MS = 20;

function tryBind(name: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(undefined);
      else reject(err);
    });
    server.listen({ path: `\0${name}`, exclusive: true }, () => resolve(server));
  });
}

export interface ApplyLock {
  /** How long acquiring waited for another holder (ms). */
  waitedMs: number;
  release(): void;
}

/** Waits until the lock is free (at most timeoutMs), then holds it until release() or exit. */
export async function acquireApplyLock(timeoutMs = 60_000, name = APPLY_LOCK_NAME): Promise<ApplyLock> {
  const start = Date.now();
  for (;;) {
    const server = await tryBind(name);
    if (server) {
      server.unref(); // never keeps the process alive
      return { waitedMs: Date.now() - start, release: () => server.close() };
    }
    if (Date.now() - start >= timeoutMs) throw new Error(`another qubes-net-guest apply/remove held the lock for ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}
