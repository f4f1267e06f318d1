// Starts the QubesDB worker thread (qdb-worker.ts). Its own module, with nothing heavy
// imported, so that `run` can start the worker first and let it boot (a new isolate, koffi,
// libqubesdb) while the main thread loads the agent: the first QubesDB call does not wait for it.
import { SHARE_ENV, Worker } from 'node:worker_threads';

export function startQubesDBWorker(runDir: string | undefined): Worker {
  // SHARE_ENV: our libqubesdb reads QUBESDB_RUN_DIR with getenv(), which a worker's own copy of
  // the environment would not reach.
  return new Worker(new URL('./qdb-worker.js', import.meta.url), { workerData: { runDir }, env: SHARE_ENV });
}
