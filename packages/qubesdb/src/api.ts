// The typed QubesDB interface every agent programs against. Implemented by the FFI client
// (ffi-client.ts, over libqubesdb through koffi) and, for unit tests of pure logic only, by
// MemoryQubesDB.

/** A failed QubesDB operation: which one, on which path, and the errno the library set. */
export class QubesDBError extends Error {
  constructor(
    readonly op: string,
    readonly path: string,
    readonly errno: number,
    message?: string,
  ) {
    super(message ?? `qubesdb ${op} ${path} failed (errno ${errno})`);
    this.name = 'QubesDBError';
  }
}

export interface QubesDBWatch extends AsyncIterable<string> {
  /** Stops the watch; the iterator ends. */
  close(): Promise<void>;
}

export interface QubesDB {
  /** The value, or undefined when the key does not exist. */
  read(path: string): Promise<string | undefined>;
  write(path: string, value: string): Promise<void>;
  /** Removes a key; a trailing '/' removes every key under that prefix. Missing is not an error. */
  rm(path: string): Promise<void>;
  /** Full paths with this raw prefix, ascending. */
  list(prefix: string): Promise<string[]>;
  /** path → value for every key with this raw prefix, ascending. */
  multiread(prefix: string): Promise<Map<string, string>>;
  /**
   * Changed paths as they are reported, for exact paths and directory prefixes ending in '/'.
   * After a reconnect (daemon restart) each watched path is reported once, since changes may
   * have been missed meanwhile.
   */
  watch(paths: readonly string[]): QubesDBWatch;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Like qdb_open(name): the database of domain `name` (qubesdb.NAME.sock). */
  name?: string;
  /**
   * Directory holding the sockets instead of /var/run/qubes. Only our own libqubesdb honours
   * it (through QUBESDB_RUN_DIR); tests and the lab's dom0 role use it.
   */
  runDir?: string;
  /** Path of the library to load (else QUBESDB_LIBRARY, the system's, then ours). */
  library?: string;
}
