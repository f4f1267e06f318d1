// Live sessions of this process, and the once-per-process handlers that tear them down when
// the process ends in any way node lets us see (normal exit, SIGINT/SIGTERM/SIGHUP, an uncaught
// error), synchronously, so an interrupted test leaves nothing behind. SIGKILL cannot be
// caught: cleanupStale() (or `node packages/netns/dist/cleanup.js`) removes those leftovers.
export interface SyncDestroyable {
  readonly id: string;
  destroySync(): void;
}

const live = new Map<string, SyncDestroyable>();
let installed = false;

function destroyAllSync(): void {
  for (const s of [...live.values()]) {
    try {
      s.destroySync();
    } catch (err) {
      process.stderr.write(`netns: cleanup of session ${s.id} failed: ${String(err)}\n`);
    }
  }
  live.clear();
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', destroyAllSync);
  // The monitor variant does not change node's own handling (print and exit 1).
  process.on('uncaughtExceptionMonitor', destroyAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      destroyAllSync();
      // Let other listeners (e.g. the test runner) see it; if we are the only one, die of it.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
}

export function registerSession(s: SyncDestroyable): void {
  installHandlers();
  live.set(s.id, s);
}

export function unregisterSession(id: string): void {
  live.delete(id);
}

export function liveSessionIds(): string[] {
  return [...live.keys()];
}
