// The agent's QubesDB: one connection for the driver and the firewall together, whose calls
// never block the event loop (issue 10.7). libqubesdb answers synchronously and waits as long
// as the daemon does not answer (a stopped or wedged daemon), which on the main thread would
// freeze timers and the control socket. So read/write/rm/list/multiread go over the pure-JS
// socket client (@qubes-net/qubesdb/socket-client: node:net, pipelined, nothing blocks), and a
// call not answered within `timeoutMs` fails with ETIMEDOUT (its reply, if it ever comes, is
// matched in order and dropped). A connection the daemon closed (a restart) is opened again by
// the next call, and a call that failed because of it is sent once more on the new one.
// Watches stay with the FFI client: it polls their fds off-thread and re-registers them after
// a daemon restart.
//
// Every watch event also counts as work for the idle-exit clock (`onEvent`).
import { constants } from 'node:os';
import { QubesDBError, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb/api';
import { SocketQubesDB } from '@qubes-net/qubesdb/socket-client';

export interface HostedQubesDBOptions {
  runDir?: string | undefined;
  timeoutMs: number;
  /** A watch reported a path (work for the idle clock). */
  onEvent?: (path: string) => void;
}

/** The socket client's errors for a lost or unusable connection (as opposed to a refused request). */
function connectionLost(err: unknown): boolean {
  return err instanceof QubesDBError && (err.op === 'io' || err.op === 'open');
}

export class HostedQubesDB implements QubesDB {
  private conn: Promise<SocketQubesDB> | undefined;
  private watcher: QubesDB | undefined;
  private waiting = 0;
  private closed = false;

  constructor(private readonly opts: HostedQubesDBOptions) {}

  /** Calls still waiting for the daemon (status and the idle decision use it). */
  get inFlight(): number {
    return this.waiting;
  }

  private connection(): Promise<SocketQubesDB> {
    this.conn ??= SocketQubesDB.open(this.opts.runDir ? { runDir: this.opts.runDir } : {});
    const c = this.conn;
    c.catch(() => {
      if (this.conn === c) this.conn = undefined;
    });
    return c;
  }

  private async once<T>(fn: (db: SocketQubesDB) => Promise<T>): Promise<T> {
    const c = this.connection();
    try {
      return await fn(await c);
    } catch (err) {
      // The next call opens a fresh connection (the daemon restarted or went away).
      if (connectionLost(err) && this.conn === c) this.conn = undefined;
      throw err;
    }
  }

  private call<T>(op: string, path: string, fn: (db: SocketQubesDB) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new QubesDBError(op, path, constants.errno.EBADF, 'connection closed'));
    this.waiting++;
    let timer: NodeJS.Timeout | undefined;
    const work = this.once(fn).catch((err) => (connectionLost(err) ? this.once(fn) : Promise.reject(err)));
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QubesDBError(op, path, constants.errno.ETIMEDOUT, `QubesDB did not answer ${op} ${path} within ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    });
    return Promise.race([work, timeout]).finally(() => {
      clearTimeout(timer);
      this.waiting--;
    });
  }

  read(path: string): Promise<string | undefined> {
    return this.call('read', path, (db) => db.read(path));
  }
  write(path: string, value: string): Promise<void> {
    return this.call('write', path, (db) => db.write(path, value));
  }
  rm(path: string): Promise<void> {
    return this.call('rm', path, (db) => db.rm(path));
  }
  list(prefix: string): Promise<string[]> {
    return this.call('list', prefix, (db) => db.list(prefix));
  }
  multiread(prefix: string): Promise<Map<string, string>> {
    return this.call('multiread', prefix, (db) => db.multiread(prefix));
  }

  watch(paths: readonly string[]): QubesDBWatch {
    if (!this.watcher) {
      // Loaded on first use: the FFI client (koffi, libqubesdb) is only needed for watches.
      throw new Error('HostedQubesDB.watch before openWatches()');
    }
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

  /** Opens the FFI connection watches use (koffi and libqubesdb load here). */
  async openWatches(): Promise<void> {
    if (this.watcher) return;
    const { openQubesDB } = await import('@qubes-net/qubesdb/client');
    this.watcher = openQubesDB(this.opts.runDir ? { runDir: this.opts.runDir } : {});
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watcher?.close().catch(() => undefined);
    const c = this.conn;
    this.conn = undefined;
    // A connection stuck on a daemon that does not answer is simply dropped.
    if (c) await Promise.race([c.then((db) => db.close()).catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}
