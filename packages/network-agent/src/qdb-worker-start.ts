// Starts the QubesDB worker thread (qdb-worker.ts). Its own module, with nothing heavy
// imported, so that `run` can start the worker first and let it boot (a new isolate, koffi,
// libqubesdb) while the main thread loads the agent: the first QubesDB call does not wait for it.
import { Worker } from 'node:worker_threads';

export function startQubesDBWorker(runDir: string | undefined): Worker {
  return new Worker(new URL('./qdb-worker.js', import.meta.url), { workerData: { runDir } });
}
