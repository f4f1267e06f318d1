// The QubesDB-compatible daemon: sorted store, watch registry, per-client connections, sockets.
export { QubesDBDaemon, MAX_CLIENTS, DEFAULT_RUN_DIR, socketPaths, isValidDaemonName, type DaemonOptions } from './server.js';
export { QubesDBCore, type Peer, type Verdict } from './commands.js';
export { SortedStore } from './store.js';
export { WatchRegistry } from './watches.js';
export { MAX_PENDING_OUTPUT } from './connection.js';
