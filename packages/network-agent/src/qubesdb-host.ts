// The agent's QubesDB: one connection for the driver and the firewall together, whose calls
// never block the event loop (issue 10.7). libqubesdb answers synchronously and waits as long
// as the daemon does not answer (a stopped or wedged daemon), which in the main thread would
// freeze timers and the control socket. So read/write/rm/list/multiread go to one worker
// thread (qdb-worker.ts) in order; a call not answered within `timeoutMs` fails with errno
// ETIMEDOUT while the worker keeps waiting for it (later calls queue behind it and complete
// once the daemon answers again). Watches stay on the main thread: the FFI client already
// polls their fds off-thread and reads an event only once it is waiting.
//
// Every watch event also counts as work for the idle-exit clock (`onEvent`).
import type { Worker } from 'node:worker_threads';
import { startQubesDBWorker } from './qdb-worker-start.js';
import { constants } from 'node:os';
import { QubesDBError, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb/api';
import { openQubesDB } from '@qubes-net/qubesdb/client';

type Op = 'read' | 'write' | 'rm' | 'list' | 'multiread' | 'close';
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: { op: string; path: string; errno: number; message: string } };

export interface HostedQubesDBOptions {
  runDir?: string | undefined;
  timeoutMs: number;
  /** A watch reported a path (work for the idle clock). */
  onEvent?: (path: string) => void;
  /** An already started worker (startQubesDBWorker), else one is started here. */
  worker?: Worker;
}

export class HostedQubesDB implements QubesDB {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private watcher: QubesDB | undefined;
  private closed = false;

  constructor(private readonly opts: HostedQubesDBOptions) {
    this.worker = opts.worker ?? startQubesDBWorker(opts.runDir);
    this.worker.on('message', (r: Reply) => this.settle(r));
    this.worker.on('error', (err) => {
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new QubesDBError('open', '', constants.errno.ECONNREFUSED, `QubesDB worker failed: ${err.message}`));
        this.pending.delete(id);
      }
    });
    // Waiting calls must not keep the process alive on their own; the agent decides when to exit.
    this.worker.unref();
  }

  /** Calls still waiting for the daemon (status and the idle decision use it). */
  get inFlight(): number {
    return this.pending.size;
  }

  private settle(r: Reply): void {
    const p = this.pending.get(r.id);
    if (!p) return; // timed out earlier: its caller has moved on
    this.pending.delete(r.id);
    clearTimeout(p.timer);
    if (r.ok) p.resolve(r.value);
    else p.reject(new QubesDBError(r.error.op, r.error.path, r.error.errno, r.error.message));
  }

  private call<T>(op: Op, args: string[]): Promise<T> {
    if (this.closed && op !== 'close') return Promise.reject(new QubesDBError(op, args[0] ?? '', constants.errno.EBADF, 'connection closed'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QubesDBError(op, args[0] ?? '', constants.errno.ETIMEDOUT, `QubesDB did not answer ${op} ${args[0] ?? ''} within ${this.opts.timeoutMs} ms`));
      }, this.opts.timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.worker.postMessage({ id, op, args });
    });
  }

  read(path: string): Promise<string | undefined> {
    return this.call('read', [path]);
  }
  write(path: string, value: string): Promise<void> {
    return this.call('write', [path, value]);
  }
  rm(path: string): Promise<void> {
    return this.call('rm', [path]);
  }
  list(prefix: string): Promise<string[]> {
    return this.call('list', [prefix]);
  }
  multiread(prefix: string): Promise<Map<string, string>> {
    return this.call('multiread', [prefix]);
  }

  watch(paths: readonly string[]): QubesDBWatch {
    this.watcher ??= openQubesDB(this.opts.runDir ? { runDir: this.opts.runDir } : {});
    const inner = this.watcher.watch(paths);
    const onEvent = this.opts.onEvent;
    if (!onEvent) return inner;
    return {
      close: () => inner.close(),
      async *[Symbol.asyncIterator]() {
        for await (const p of inner) {
          onEvent(p);
          yield p;
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.watcher?.close().catch(() => undefined);
    // A worker stuck in a call to a daemon that does not answer is left to process exit.
    const done = this.call('close', []).catch(() => undefined);
    this.closed = true;
    await Promise.race([done, new Promise((r) => setTimeout(r, 1000).unref())]);
    if (this.pending.size === 0) await this.worker.terminate();
  }
}
