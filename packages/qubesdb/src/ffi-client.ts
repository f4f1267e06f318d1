// The QubesDB client agents use: libqubesdb (ours or Qubes' own) through koffi.
//
// read/write/rm/list/multiread are synchronous library calls on one handle, wrapped in async
// functions: each is one round trip on a local socket (tens of microseconds), cheaper than
// any thread hand-off. Everything the library returns is decoded with its length and then
// released with libc free().
//
// Watches: each watch() gets its own handle, so its events never mix with replies on the
// main handle. Blocking in qdb_read_watch would cost one thread per watch: with koffi's
// .async that is one of libuv's 4 pool threads each (a few watches would starve fs and dns
// work), and with a worker thread per watch ~10 MB RSS each (the guest agent must stay under
// 45 MB). Instead ONE pool thread per process runs poll(2) over every watch's fd plus an
// eventfd used to wake it; when a fd is readable the main thread calls qdb_read_watch, which
// then finds a message waiting and does not block. poll never touches a handle, and handles
// are closed only while no poll is in flight, so no handle is ever freed under another
// thread. This needs only qdb_watch_fd/qdb_read_watch, so it works with upstream's library.
//
// Daemon restarts: the main handle reconnects inside the library on the next call (and we
// retry a call once when it failed with EPIPE). A watch whose connection drops opens a fresh
// handle with backoff, registers every path again and then reports each watched path once,
// since changes may have been missed meanwhile. That is done here rather than relying on the
// library, so it also holds with upstream's library (which does not re-register watches).
import { constants as osConstants } from 'node:os';
import { promisify } from 'node:util';
import koffi from 'koffi';
import { QubesDBError, type OpenOptions, type QubesDB, type QubesDBWatch } from './api.js';
import {
  lastErrno,
  loadLibC,
  loadQubesDBLibrary,
  qubesDBLogger,
  type CPointer,
  type LibC,
  type QdbHandle,
  type QubesDBLibrary,
} from './ffi-library.js';

/** A non-NULL pointer for writing an empty value (see writeBytes). */
const EMPTY_VALUE = Buffer.alloc(1);
const ERR = osConstants.errno;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const POLLIN = 0x1;
/** Largest value length the library accepts (the daemon stores at most 3071 bytes). */
export const QDB_MAX_DATA = 3072;
/** Path buffer size, NUL included. */
export const QDB_MAX_PATH = 64;

/** Like common's forLog (not imported: see qubesDBLogger on why common stays unloaded here). */
function forLog(value: string, max = 80): string {
  return value.length > max ? `${value.slice(0, max)}…(${value.length} bytes)` : value;
}

const errnoNames = new Map<number, string>(Object.entries(ERR).map(([name, n]) => [n, name]));

function fail(op: string, path: string, errno: number, why?: string): QubesDBError {
  const name = errnoNames.get(errno) ?? `errno ${errno}`;
  return new QubesDBError(op, path, errno, `qubesdb ${op} ${forLog(path)} failed: ${why ?? name}`);
}

/** EPIPE/ECONNRESET: the daemon went away; the library reconnects on the next call. */
function connectionLost(errno: number): boolean {
  return errno === ERR.EPIPE || errno === ERR.ECONNRESET || errno === ERR.ENOTCONN;
}

const PATH_CHARS = /^[A-Za-z0-9_/.:@-]*$/;

/**
 * The daemon's path rules, checked here too so that a bad path is a clear EINVAL whichever
 * library is loaded. key: one entry; target: entry or 'dir/' (rm, watch); prefix: any raw
 * prefix, '' included (list, multiread).
 */
export function checkPath(op: string, path: string, kind: 'key' | 'target' | 'prefix'): void {
  const bad = (why: string): never => {
    throw fail(op, path, ERR.EINVAL, why);
  };
  if (typeof path !== 'string') bad('path is not a string');
  if (path.length >= QDB_MAX_PATH) bad(`path longer than ${QDB_MAX_PATH - 1} characters`);
  if (path === '') {
    if (kind !== 'prefix') bad('empty path');
    return;
  }
  if (!path.startsWith('/')) bad("path must start with '/'");
  if (!PATH_CHARS.test(path)) bad('path has characters outside [A-Za-z0-9_/.:@-]');
  if (kind === 'key' && path.endsWith('/')) bad("path of a single key must not end in '/'");
}

/** Runs qdb_open with QUBESDB_RUN_DIR set to runDir (when given) only for that call. */
function openHandle(lib: QubesDBLibrary, opts: OpenOptions): { handle: QdbHandle } | { errno: number } {
  const key = 'QUBESDB_RUN_DIR';
  const saved = process.env[key];
  if (opts.runDir !== undefined) process.env[key] = opts.runDir;
  try {
    const handle = lib.qdb_open(opts.name ?? null);
    if (handle) return { handle };
    return { errno: lastErrno() };
  } finally {
    if (opts.runDir !== undefined) {
      if (saved === undefined) delete process.env[key];
      else process.env[key] = saved;
    }
  }
}

function describeTarget(opts: OpenOptions): string {
  const dir = opts.runDir ?? process.env.QUBESDB_RUN_DIR ?? '/var/run/qubes';
  return `${dir}/qubesdb${opts.name ? `.${opts.name}` : ''}.sock`;
}

/** Copies `len` bytes at a C pointer into a Buffer. */
function copyBytes(p: CPointer, len: number): Buffer {
  if (len === 0) return Buffer.alloc(0);
  return Buffer.from(new Uint8Array(koffi.view(p, len)));
}

// koffi.decode of strings ('char', -1) and of whole arrays keeps ~20 bytes of C heap per
// call in koffi 2.15 (measured with mallinfo2), so strings are read as strlen + view and
// pointer arrays one element at a time.
const POINTER_SIZE = koffi.sizeof('void *');

/** A NUL-terminated C string (a path: ASCII). */
function cString(libc: LibC, p: CPointer): string {
  return copyBytes(p, libc.strlen(p)).toString('utf8');
}

/** Element i of a C array of pointers. */
function pointerAt(arr: CPointer, i: number): CPointer {
  return koffi.decode(arr, i * POINTER_SIZE, 'void *') as CPointer;
}

// ---------------------------------------------------------------------------------------
// The watch poller: one async poll(2) for every watch of one library in this process. Its
// eventfd and pollfd buffer live as long as the process; the pool thread is busy only while
// at least one watch is open (with none, nothing is pending and the process may exit).

interface PollTarget {
  readonly fd: number;
  /** Called on the main thread after poll reported the fd (readable, hung up or invalid). */
  onReady(): void;
}

class WatchPoller {
  private readonly targets = new Set<PollTarget>();
  private readonly libc: LibC;
  private readonly pollAsync: (fds: CPointer, nfds: number, timeout: number) => Promise<number>;
  private efd = -1;
  /** pollfd array of the asynchronous poll (C memory: it must not move while polled). */
  private fds: CPointer | undefined;
  private capacity = 0;
  /** pollfd of readableNow's synchronous poll. */
  private probe: CPointer | undefined;
  private inFlight = false;
  private looping = false;
  private idleWaiters: Array<() => void> = [];
  private readonly eight = Buffer.alloc(8);
  private readonly one = (() => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(1n);
    return b;
  })();

  constructor(libc: LibC) {
    this.libc = libc;
    this.pollAsync = promisify(libc.poll.async.bind(libc.poll)) as (fds: CPointer, nfds: number, timeout: number) => Promise<number>;
  }

  add(t: PollTarget): void {
    if (this.efd < 0) {
      this.efd = this.libc.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (this.efd < 0) throw new Error(`eventfd failed (errno ${lastErrno()})`);
    }
    this.targets.add(t);
    this.wake();
    if (!this.looping) void this.loop();
  }

  /** Stops polling t; resolves once no poll(2) that may include its fd is still running. */
  remove(t: PollTarget): Promise<void> {
    this.targets.delete(t);
    if (!this.inFlight) return Promise.resolve();
    this.wake();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** True when fd has something to read right now (a synchronous poll with timeout 0). */
  readableNow(fd: number): boolean {
    this.probe ??= koffi.alloc('uint8', 8);
    const dv = new DataView(koffi.view(this.probe, 8));
    dv.setInt32(0, fd, true);
    dv.setInt16(4, POLLIN, true);
    dv.setInt16(6, 0, true);
    return this.libc.poll(this.probe, 1, 0) > 0;
  }

  private wake(): void {
    if (this.inFlight) this.libc.write(this.efd, this.one, 8);
  }

  private ensureCapacity(n: number): void {
    if (n <= this.capacity) return;
    if (this.fds) koffi.free(this.fds);
    this.capacity = Math.max(n, this.capacity * 2, 8);
    this.fds = koffi.alloc('uint8', this.capacity * 8);
  }

  private async loop(): Promise<void> {
    this.looping = true;
    let failed = false;
    try {
      while (this.targets.size > 0) {
        const list = [...this.targets];
        this.ensureCapacity(list.length + 1);
        const dv = new DataView(koffi.view(this.fds, (list.length + 1) * 8));
        [this.efd, ...list.map((t) => t.fd)].forEach((fd, i) => {
          dv.setInt32(i * 8, fd, true);
          dv.setInt16(i * 8 + 4, POLLIN, true);
          dv.setInt16(i * 8 + 6, 0, true);
        });
        this.inFlight = true;
        let n: number;
        try {
          n = await this.pollAsync(this.fds, list.length + 1, -1);
        } finally {
          this.inFlight = false;
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const w of waiters) w();
        }
        if (n < 0) await new Promise((resolve) => setTimeout(resolve, 10)); // not expected (no signals reach pool threads); never spin
        if (n <= 0) continue;
        const after = new DataView(koffi.view(this.fds, (list.length + 1) * 8));
        if (after.getInt16(6, true) !== 0) this.libc.read(this.efd, this.eight, 8);
        list.forEach((t, i) => {
          if (after.getInt16((i + 1) * 8 + 6, true) === 0 || !this.targets.has(t)) return;
          try {
            t.onReady();
          } catch (err) {
            qubesDBLogger().error({ err: String(err) }, 'qubesdb watch event handling failed');
          }
        });
      }
    } catch (err) {
      failed = true;
      qubesDBLogger().error({ err: String(err) }, 'qubesdb watch poller failed');
    } finally {
      this.looping = false;
    }
    // After a failure, try again a little later rather than spinning.
    if (failed && this.targets.size > 0) setTimeout(() => this.looping || void this.loop(), 100);
  }
}

const pollers = new Map<QubesDBLibrary, WatchPoller>();

function pollerFor(lib: QubesDBLibrary): WatchPoller {
  let p = pollers.get(lib);
  if (!p) {
    p = new WatchPoller(loadLibC());
    pollers.set(lib, p);
  }
  return p;
}

// ---------------------------------------------------------------------------------------
// One watch: a dedicated handle, its paths, and a queue of changed paths for the iterator.

const RECONNECT_FIRST_MS = 20;
const RECONNECT_MAX_MS = 2000;
/** Events read per wake-up before giving others a turn. */
const MAX_EVENTS_PER_WAKE = 256;

/** One watch. Iterate it from one consumer at a time; close() ends the iteration. */
class FfiWatch implements QubesDBWatch, PollTarget {
  fd = -1;
  private handle: QdbHandle | null = null;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly queue: string[] = [];
  private wakeIterator: (() => void) | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = RECONNECT_FIRST_MS;

  constructor(
    private readonly lib: QubesDBLibrary,
    private readonly libc: LibC,
    private readonly poller: WatchPoller,
    private readonly opts: OpenOptions,
    private readonly paths: readonly string[],
    private readonly onClosed: (w: FfiWatch) => void,
  ) {
    for (const p of paths) checkPath('watch', p, 'target');
    const r = this.connect();
    if (r !== true) {
      if (r === ERR.EINVAL) throw fail('watch', paths.join(' '), r);
      qubesDBLogger().warn({ socket: describeTarget(opts), errno: r }, 'qubesdb watch not connected, retrying');
      this.scheduleReconnect(false);
    }
  }

  /** Opens a handle and registers every path; true, or the errno of what failed. */
  private connect(): true | number {
    const opened = openHandle(this.lib, this.opts);
    if ('errno' in opened) return opened.errno;
    const h = opened.handle;
    for (const p of this.paths) {
      if (!this.lib.qdb_watch(h, p)) {
        const e = lastErrno();
        this.lib.qdb_close(h);
        return e || ERR.EPROTO;
      }
    }
    const fd = this.lib.qdb_watch_fd(h);
    if (fd < 0) {
      const e = lastErrno();
      this.lib.qdb_close(h);
      return e || ERR.EPIPE;
    }
    this.handle = h;
    this.fd = fd;
    this.poller.add(this);
    return true;
  }

  private scheduleReconnect(announce: boolean): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed) return;
      const r = this.connect();
      if (r === true) {
        this.retryDelay = RECONNECT_FIRST_MS;
        qubesDBLogger().info({ socket: describeTarget(this.opts), paths: this.paths.length }, 'qubesdb watch reconnected');
        // Whatever changed while we were away went unreported: report every path once.
        for (const p of this.paths) this.push(p);
        return;
      }
      if (announce) qubesDBLogger().warn({ socket: describeTarget(this.opts), errno: r }, 'qubesdb watch reconnect failed, retrying');
      this.retryDelay = Math.min(this.retryDelay * 2, RECONNECT_MAX_MS);
      this.scheduleReconnect(this.retryDelay >= RECONNECT_MAX_MS);
    }, this.retryDelay);
  }

  onReady(): void {
    const h = this.handle;
    if (!h) return;
    for (let i = 0; i < MAX_EVENTS_PER_WAKE; i++) {
      const p = this.lib.qdb_read_watch(h);
      if (!p) {
        this.lost(lastErrno());
        return;
      }
      const path = cString(this.libc, p);
      this.libc.free(p);
      this.push(path);
      if (!this.poller.readableNow(this.fd)) return;
    }
  }

  /** The connection broke: drop the handle (no poll is in flight now) and start over. */
  private lost(errno: number): void {
    qubesDBLogger().warn({ socket: describeTarget(this.opts), errno }, 'qubesdb watch connection lost, reconnecting');
    const h = this.handle;
    this.handle = null;
    this.fd = -1;
    void this.poller.remove(this);
    if (h) this.lib.qdb_close(h);
    this.retryDelay = RECONNECT_FIRST_MS;
    this.scheduleReconnect(true);
  }

  private push(path: string): void {
    this.queue.push(path);
    this.wakeIterator?.();
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.wakeIterator?.();
    const h = this.handle;
    this.handle = null;
    if (h) {
      // Wait until no poll(2) includes our fd, then free the handle.
      await this.poller.remove(this);
      this.lib.qdb_close(h);
    }
    this.fd = -1;
    this.onClosed(this);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      if (this.queue.length > 0) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.wakeIterator = resolve));
      this.wakeIterator = undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The client.

/**
 * A QubesDB connection through libqubesdb. Besides the QubesDB interface it offers the raw
 * byte forms (readBytes, writeBytes, multireadBytes) that the CLI needs for non-UTF-8 values.
 */
export class FfiQubesDB implements QubesDB {
  readonly library: QubesDBLibrary;
  private readonly libc: LibC;
  private handle: QdbHandle | null;
  private readonly watches = new Set<FfiWatch>();
  private readonly len = new Uint32Array(1);

  constructor(private readonly opts: OpenOptions = {}) {
    // Only our library honours a run dir: prefer it over the system's when one is asked for.
    this.library = loadQubesDBLibrary(opts.library, opts.runDir !== undefined || !!process.env.QUBESDB_RUN_DIR);
    this.libc = loadLibC();
    const opened = openHandle(this.library, opts);
    if ('errno' in opened) {
      throw fail('open', describeTarget(opts), opened.errno, `cannot connect to ${describeTarget(opts)} (${errnoNames.get(opened.errno) ?? opened.errno})`);
    }
    this.handle = opened.handle;
  }

  private h(op: string, path: string): QdbHandle {
    if (!this.handle) throw fail(op, path, ERR.EBADF, 'connection closed');
    return this.handle;
  }

  /**
   * Calls fn, and once more when it failed because the daemon went away (the library
   * reconnects on that second call). fn returns a result or an errno.
   */
  private retrying<T>(op: string, path: string, fn: (h: QdbHandle) => { ok: T } | { errno: number }): T {
    let r = fn(this.h(op, path));
    if ('errno' in r && connectionLost(r.errno)) r = fn(this.h(op, path));
    if ('errno' in r) throw fail(op, path, r.errno);
    return r.ok;
  }

  async readBytes(path: string): Promise<Buffer | undefined> {
    checkPath('read', path, 'key');
    return this.retrying<Buffer | undefined>('read', path, (h) => {
      const p = this.library.qdb_read(h, path, this.len);
      if (!p) {
        const errno = lastErrno();
        return errno === ERR.ENOENT ? { ok: undefined } : { errno };
      }
      const value = copyBytes(p, this.len[0]!);
      this.libc.free(p);
      return { ok: value };
    });
  }

  async read(path: string): Promise<string | undefined> {
    return (await this.readBytes(path))?.toString('utf8');
  }

  async writeBytes(path: string, value: Buffer): Promise<void> {
    checkPath('write', path, 'key');
    if (value.includes(0)) throw fail('write', path, ERR.EINVAL, 'value contains a NUL byte');
    if (value.length > QDB_MAX_DATA) throw fail('write', path, ERR.EMSGSIZE, `value longer than ${QDB_MAX_DATA} bytes`);
    // koffi passes NULL for an empty Buffer, and upstream's qdb_write refuses a NULL value even
    // with length 0; hand it a real (one-byte) buffer so an empty value is written everywhere.
    const data = value.length === 0 ? EMPTY_VALUE : value;
    this.retrying('write', path, (h) =>
      this.library.qdb_write(h, path, data, value.length) ? { ok: undefined } : { errno: lastErrno() || ERR.EPROTO },
    );
  }

  async write(path: string, value: string): Promise<void> {
    await this.writeBytes(path, Buffer.from(value, 'utf8'));
  }

  async rm(path: string): Promise<void> {
    checkPath('rm', path, 'target');
    this.retrying('rm', path, (h) => (this.library.qdb_rm(h, path) ? { ok: undefined } : { errno: lastErrno() || ERR.EPROTO }));
  }

  async list(prefix: string): Promise<string[]> {
    checkPath('list', prefix, 'prefix');
    return this.retrying<string[]>('list', prefix, (h) => {
      const arr = this.library.qdb_list(h, prefix, this.len);
      if (!arr) return { errno: lastErrno() || ERR.EPROTO };
      const n = this.len[0]!;
      const out: string[] = [];
      for (let i = 0; i < n; i++) {
        const p = pointerAt(arr, i);
        out.push(cString(this.libc, p));
        this.libc.free(p);
      }
      this.libc.free(arr);
      return { ok: out };
    });
  }

  async multireadBytes(prefix: string): Promise<Map<string, Buffer>> {
    checkPath('multiread', prefix, 'prefix');
    return this.retrying<Map<string, Buffer>>('multiread', prefix, (h) => {
      const lensOut: [CPointer | null] = [null];
      const arr = this.library.qdb_multiread(h, prefix, lensOut, this.len);
      if (!arr) return { errno: lastErrno() || ERR.EPROTO };
      const n = this.len[0]!;
      const lensPtr = lensOut[0];
      const lens = n && lensPtr ? new Uint32Array(koffi.view(lensPtr, 4 * n).slice(0)) : new Uint32Array(0);
      const out = new Map<string, Buffer>();
      for (let i = 0; i < n; i++) {
        const pathPtr = pointerAt(arr, 2 * i);
        const valuePtr = pointerAt(arr, 2 * i + 1);
        out.set(cString(this.libc, pathPtr), valuePtr ? copyBytes(valuePtr, lens[i]!) : Buffer.alloc(0));
        this.libc.free(pathPtr);
        if (valuePtr) this.libc.free(valuePtr);
      }
      if (lensPtr) this.libc.free(lensPtr);
      this.libc.free(arr);
      return { ok: out };
    });
  }

  async multiread(prefix: string): Promise<Map<string, string>> {
    const raw = await this.multireadBytes(prefix);
    return new Map([...raw].map(([k, v]) => [k, v.toString('utf8')]));
  }

  watch(paths: readonly string[]): QubesDBWatch {
    this.h('watch', paths.join(' '));
    const w = new FfiWatch(this.library, this.libc, pollerFor(this.library), this.opts, [...paths], (x) => this.watches.delete(x));
    this.watches.add(w);
    return w;
  }

  async close(): Promise<void> {
    await Promise.all([...this.watches].map((w) => w.close()));
    const h = this.handle;
    this.handle = null;
    if (h) this.library.qdb_close(h);
  }
}

/**
 * Connects to QubesDB through libqubesdb: the local daemon, or domain `name`'s database;
 * `runDir` replaces /var/run/qubes (our library only). Throws QubesDBError('open', …) when
 * neither the read-write nor the read-only socket accepts the connection.
 */
export function openQubesDB(opts: OpenOptions = {}): FfiQubesDB {
  return new FfiQubesDB(opts);
}
