// Public surface of @qubes-net/qubesdb.
export * from './api.js';
export { MemoryQubesDB } from './memory.js';
// The FFI client (ffi-client.ts), wire codec (codec.ts) and daemon (daemon/) are added by
// their own modules; see README.
export * from './codec.js';
export { QubesDBDaemon, QubesDBCore, SortedStore, WatchRegistry, MAX_CLIENTS, DEFAULT_RUN_DIR, socketPaths, type DaemonOptions } from './daemon/index.js';
export { runDaemonCli, parseDaemonArgs, type DaemonCliOptions } from './daemon-main.js';
export { openQubesDB, FfiQubesDB, checkPath } from './ffi-client.js';
export { setQubesDBLogger, silentClientLogger, findLibrary, type ClientLogger } from './ffi-library.js';
