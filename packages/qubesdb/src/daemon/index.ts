// The QubesDB-compatible daemon: sorted store, watch registry, per-client connections, sockets.
export { QubesDBDaemon, MAX_CLIENTS, DEFAULT_LIMITS, DEFAULT_RUN_DIR, resolveLimits, socketPaths, isValidDaemonName, type DaemonLimits, type DaemonOptions } from './server.js';
export { QubesDBCore, MAX_WATCHES_PER_CLIENT, MAX_READ_ONLY_WATCHES, type CoreOptions, type Peer, type Verdict } from './commands.js';
export { SortedStore } from './store.js';
export { WatchRegistry } from './watches.js';
export { MAX_PENDING_OUTPUT } from './connection.js';
