// Finds libqubesdb.so and binds its functions (and the few libc ones the client needs) with
// koffi. Which file is loaded: an explicit path (OpenOptions.library, else QUBESDB_LIBRARY),
// else Qubes' own library where the system has one, else ours (native-bindings/build in a
// checkout, /usr/lib/qubes-net/native when installed). Each file is loaded once per process.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import type { Logger } from '@qubes-net/common';

/** Where distributions install Qubes' own libqubesdb.so (RPM %{_libdir}, Makefile, Debian). */
export const SYSTEM_LIBRARY_PATHS: readonly string[] = [
  '/usr/lib64/libqubesdb.so',
  '/usr/lib/libqubesdb.so',
  '/usr/lib/x86_64-linux-gnu/libqubesdb.so',
];

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Our own build: in a checkout next to the packages, or in the installed layout. */
export const OWN_LIBRARY_PATHS: readonly string[] = [
  join(packageRoot, '..', '..', 'native-bindings', 'build', 'libqubesdb.so'),
  join(packageRoot, '..', '..', 'native', 'libqubesdb.so'),
  '/usr/lib/qubes-net/native/libqubesdb.so',
];

export type LibrarySource = 'explicit' | 'env' | 'system' | 'own';

/** An opaque qdb_handle_t as koffi hands it around. */
export type QdbHandle = unknown;
/** A pointer returned by C (koffi external); null for NULL. */
export type CPointer = unknown;

export interface QubesDBLibrary {
  readonly path: string;
  readonly source: LibrarySource;
  qdb_open(vmname: string | null): QdbHandle | null;
  qdb_close(h: QdbHandle): void;
  qdb_read(h: QdbHandle, path: string, valueLen: Uint32Array): CPointer | null;
  qdb_list(h: QdbHandle, path: string, listLen: Uint32Array): CPointer | null;
  qdb_multiread(h: QdbHandle, path: string, valuesLen: [CPointer | null], listLen: Uint32Array): CPointer | null;
  qdb_write(h: QdbHandle, path: string, value: Buffer, valueLen: number): number;
  qdb_rm(h: QdbHandle, path: string): number;
  qdb_watch(h: QdbHandle, path: string): number;
  qdb_unwatch(h: QdbHandle, path: string): number;
  qdb_watch_fd(h: QdbHandle): number;
  qdb_read_watch(h: QdbHandle): CPointer | null;
}

/** libc functions: free() for everything the library returns; the rest for the watch poller. */
export interface LibC {
  free(p: CPointer): void;
  strlen(p: CPointer): number;
  /** poll(2) on a koffi.alloc'd pollfd array; also called with .async on the libuv pool. */
  poll: ((fds: CPointer, nfds: number, timeout: number) => number) & {
    async(fds: CPointer, nfds: number, timeout: number, cb: (err: unknown, res: number) => void): void;
  };
  eventfd(initval: number, flags: number): number;
  read(fd: number, buf: Buffer, count: number): number;
  write(fd: number, buf: Buffer, count: number): number;
  close(fd: number): number;
}

/** What the client logs through: any pino logger (an agent's own, typically). */
export type ClientLogger = Pick<Logger, 'info' | 'warn' | 'error'>;

let logger: ClientLogger | undefined;

/** Where the client logs; agents pass their logger, the CLI a silent one. */
export function setQubesDBLogger(l: ClientLogger): void {
  logger = l;
}

/**
 * The logger set above, else one like common's createLogger('qubesdb-client') (pino JSON on
 * stdout, level QUBES_NET_LOG_LEVEL). Built here, lazily, with the pino that @qubes-net/common
 * depends on: importing common itself would load execa too, which costs short-lived CLI
 * processes (one per `qubes-net-qdb read` in shell scripts) a few hundred milliseconds.
 */
export function qubesDBLogger(): ClientLogger {
  if (!logger) {
    const requireFromCommon = createRequire(fileURLToPath(import.meta.resolve('@qubes-net/common')));
    const { pino } = requireFromCommon('pino') as typeof import('pino');
    logger = pino({ level: process.env.QUBES_NET_LOG_LEVEL ?? 'info', base: { component: 'qubesdb-client', pid: process.pid } });
  }
  return logger;
}

/** A logger that drops everything. */
export const silentClientLogger: ClientLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/**
 * The library file to load and why. `preferOwn` (set when a run dir is given, which only our
 * library honours) puts our build before the system's.
 */
export function findLibrary(explicit?: string, preferOwn = false): { path: string; source: LibrarySource } {
  if (explicit) return { path: explicit, source: 'explicit' };
  const fromEnv = process.env.QUBESDB_LIBRARY;
  if (fromEnv) return { path: fromEnv, source: 'env' };
  const system = SYSTEM_LIBRARY_PATHS.find((p) => existsSync(p));
  const own = OWN_LIBRARY_PATHS.find((p) => existsSync(p));
  const order: Array<[string | undefined, LibrarySource]> = preferOwn
    ? [[own, 'own'], [system, 'system']]
    : [[system, 'system'], [own, 'own']];
  for (const [p, source] of order) if (p) return { path: p, source };
  throw new Error(
    `libqubesdb.so not found (looked in ${[...SYSTEM_LIBRARY_PATHS, ...OWN_LIBRARY_PATHS].join(', ')}); ` +
      'build ours with `make -C native-bindings` or set QUBESDB_LIBRARY',
  );
}

/** Bound libraries by source and path (koffi keeps one dlopen per path). */
const loaded = new Map<string, QubesDBLibrary>();
let libc: LibC | undefined;

export function loadLibC(): LibC {
  if (libc) return libc;
  const c = koffi.load('libc.so.6');
  libc = {
    free: c.func('void free(void *p)'),
    strlen: c.func('size_t strlen(void *s)'),
    poll: c.func('int poll(void *fds, unsigned long nfds, int timeout)') as LibC['poll'],
    eventfd: c.func('int eventfd(unsigned int initval, int flags)'),
    read: c.func('long read(int fd, _Out_ uint8_t *buf, unsigned long count)'),
    write: c.func('long write(int fd, const uint8_t *buf, unsigned long count)'),
    close: c.func('int close(int fd)'),
  };
  return libc;
}

/** Loads (once) and binds the library chosen by findLibrary. */
export function loadQubesDBLibrary(explicit?: string, preferOwn = false): QubesDBLibrary {
  const { path, source } = findLibrary(explicit, preferOwn);
  const key = `${source}\0${path}`;
  const cached = loaded.get(key);
  if (cached) return cached;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load(path);
  } catch (err) {
    qubesDBLogger().error({ library: path, source, err: String(err) }, 'libqubesdb load failed');
    throw new Error(`cannot load libqubesdb from ${path} (${source}): ${err instanceof Error ? err.message : String(err)}`);
  }
  // Handles are opaque; returned strings are taken as raw pointers so that we can decode
  // them with their length and free them ourselves.
  const bound: QubesDBLibrary = {
    path,
    source,
    qdb_open: lib.func('void *qdb_open(const char *vmname)'),
    qdb_close: lib.func('void qdb_close(void *h)'),
    qdb_read: lib.func('void *qdb_read(void *h, const char *path, _Out_ uint32_t *value_len)'),
    qdb_list: lib.func('void *qdb_list(void *h, const char *path, _Out_ uint32_t *list_len)'),
    qdb_multiread: lib.func('void *qdb_multiread(void *h, const char *path, _Out_ void **values_len, _Out_ uint32_t *list_len)'),
    qdb_write: lib.func('int qdb_write(void *h, const char *path, const uint8_t *value, uint32_t value_len)'),
    qdb_rm: lib.func('int qdb_rm(void *h, const char *path)'),
    qdb_watch: lib.func('int qdb_watch(void *h, const char *path)'),
    qdb_unwatch: lib.func('int qdb_unwatch(void *h, const char *path)'),
    qdb_watch_fd: lib.func('int qdb_watch_fd(void *h)'),
    qdb_read_watch: lib.func('void *qdb_read_watch(void *h)'),
  };
  loaded.set(key, bound);
  qubesDBLogger().info({ library: path, source }, 'libqubesdb loaded');
  return bound;
}

/** The errno the last FFI call left (koffi saves it right after the call). */
export function lastErrno(): number {
  return koffi.errno();
}
