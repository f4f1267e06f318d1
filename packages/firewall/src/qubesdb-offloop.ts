// QubesDB for the firewall daemon without blocking its event loop (issue 10.7).
//
// libqubesdb's calls are synchronous: a QubesDB daemon that stops answering (stopped, stuck,
// flooded) would freeze every timer, the resolv.conf watch and signal handling of the whole
// process. Here read/write/rm/list/multiread run on one worker thread that owns its own
// connection (errno stays on the thread that made the call, so the library's error reporting
// keeps working); the main thread only exchanges messages with it. Watches stay on the main
// thread: the FFI client's watches already wait in poll(2) off the loop.
//
// A call that does not come back is simply pending: the engine's queue waits for it, and
// everything else (timers, other events) goes on.
import { SHARE_ENV, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openQubesDB, QubesDBError, type OpenOptions, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb';

type Op = 'read' | 'write' | 'rm' | 'list' | 'multiread';

interface Request {
  id: number;
  op: Op;
  args: string[];
}

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: { message: string; op?: string; path?: string; errno?: number } };

const MARK = 'qubes-net-firewall-qubesdb-worker';

/** The worker side: one connection, calls one at a time in arrival order. */
function serve(opts: OpenOptions): void {
  let db: QubesDB | undefined;
  let openError: unknown;
  try {
    db = openQubesDB(opts);
  } catch (e) {
    openError = e;
  }
  parentPort!.on('message', async (req: Request) => {
    let reply: Reply;
    try {
      if (!db) throw openError;
      const [a, b] = req.args as [string, string];
      const value = req.op === 'write' ? await db.write(a, b) : await db[req.op](a);
      reply = { id: req.id, ok: true, value };
    } catch (e) {
      const err = e as Partial<QubesDBError> & { message?: string };
      reply = { id: req.id, ok: false, error: { message: String(err?.message ?? e), ...(err?.op ? { op: err.op, path: err.path!, errno: err.errno! } : {}) } };
    }
    parentPort!.postMessage(reply);
  });
}

if (!isMainThread && (workerData as { mark?: string } | undefined)?.mark === MARK) serve((workerData as { opts: OpenOptions }).opts);

class OffLoopQubesDB implements QubesDB {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  private closed = false;

  constructor(
    private readonly worker: Worker,
    /** Main-thread connection, used for watches only. */
    private readonly watcher: QubesDB,
  ) {
    worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (r.ok) p.resolve(r.value);
      else p.reject(r.error.op ? new QubesDBError(r.error.op, r.error.path ?? '', r.error.errno ?? 0, r.error.message) : new Error(r.error.message));
    });
    worker.on('error', (e) => this.failAll(e));
    worker.on('exit', () => this.failAll(new Error('qubesdb worker exited')));
  }

  private failAll(e: unknown): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private call<T>(op: Op, ...args: string[]): Promise<T> {
    if (this.closed) return Promise.reject(new QubesDBError(op, args[0] ?? '', 9, `qubesdb ${op}: connection closed`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, args } satisfies Request);
    });
  }

  read(path: string): Promise<string | undefined> {
    return this.call('read', path);
  }

  write(path: string, value: string): Promise<void> {
    return this.call('write', path, value);
  }

  rm(path: string): Promise<void> {
    return this.call('rm', path);
  }

  list(prefix: string): Promise<string[]> {
    return this.call('list', prefix);
  }

  multiread(prefix: string): Promise<Map<string, string>> {
    return this.call('multiread', prefix);
  }

  watch(paths: readonly string[]): QubesDBWatch {
    return this.watcher.watch(paths);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watcher.close();
    this.failAll(new Error('qubesdb closed'));
    await this.worker.terminate();
  }
}

/**
 * Opens QubesDB with its calls on a worker thread. Throws like openQubesDB when the daemon
 * cannot be reached (checked on the main thread, which also holds the watches).
 */
export async function openOffLoopQubesDB(opts: OpenOptions = {}): Promise<QubesDB> {
  const watcher = openQubesDB(opts);
  // SHARE_ENV: the library reads QUBESDB_RUN_DIR with getenv(), which only the shared
  // environment reaches from a worker.
  const worker = new Worker(new URL(import.meta.url), { workerData: { mark: MARK, opts }, env: SHARE_ENV });
  // A worker stuck in a call must not keep the process alive once the daemon is done.
  worker.unref();
  const db = new OffLoopQubesDB(worker, watcher);
  try {
    // The worker's connection is open once it answers; an open failure comes back here.
    await db.list('/qubes-firewall-nonexistent/');
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  return db;
}
