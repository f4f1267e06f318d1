// The daemon's sockets: a read-write and a read-only AF_UNIX stream socket in the run dir,
// named like upstream's (qubesdb.sock / qubesdb.ro.sock, or qubesdb.NAME.sock /
// qubesdb.NAME.ro.sock), sharing one database and one limit of 256 clients.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { shorten as forLog, silentDaemonLogger, type DaemonLogger as Logger } from './logging.js';
import { QubesDBCore } from './commands.js';
import { ClientConnection } from './connection.js';

export const DEFAULT_RUN_DIR = '/var/run/qubes';
/** Upstream's MAX_CLIENTS. */
export const MAX_CLIENTS = 256;

export interface DaemonOptions {
  /** Directory of the sockets (created 0775 if missing). Default /var/run/qubes. */
  runDir?: string;
  /** Serve qubesdb.NAME.sock / qubesdb.NAME.ro.sock, like dom0's per-qube daemons. */
  name?: string;
  /** Mode of the read-write socket (default 0o666); the read-only one is always 0o666. */
  rwSocketPerms?: number;
  maxClients?: number;
  /** Unread output after which a client is disconnected (default MAX_PENDING_OUTPUT, 32 MiB). */
  maxPendingOutput?: number;
  logger?: Logger;
}

/** A qube name usable in a socket file name: what Qubes allows for VM names. */
export function isValidDaemonName(name: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/.test(name);
}

export function socketPaths(runDir: string, name?: string): { rw: string; ro: string } {
  const base = name ? `qubesdb.${name}` : 'qubesdb';
  return { rw: join(runDir, `${base}.sock`), ro: join(runDir, `${base}.ro.sock`) };
}

export class QubesDBDaemon {
  readonly core: QubesDBCore;
  readonly runDir: string;
  readonly socketPath: string;
  readonly roSocketPath: string;
  private readonly log: Logger;
  private readonly rwPerms: number;
  private readonly maxClients: number;
  private readonly maxPendingOutput: number | undefined;
  private readonly servers: Server[] = [];
  private readonly clients = new Set<ClientConnection>();
  /** Inode of each socket file we created, so stop() removes only our own. */
  private readonly ownedInodes = new Map<string, number>();
  private nextClientId = 1;
  private started = false;

  constructor(opts: DaemonOptions = {}) {
    if (opts.name !== undefined && !isValidDaemonName(opts.name)) throw new Error(`invalid daemon name ${forLog(opts.name)}`);
    const perms = opts.rwSocketPerms ?? 0o666;
    if (!Number.isInteger(perms) || perms < 0 || perms > 0o777) throw new Error(`invalid socket permissions ${forLog(perms)}`);
    this.runDir = opts.runDir ?? DEFAULT_RUN_DIR;
    const paths = socketPaths(this.runDir, opts.name);
    this.socketPath = paths.rw;
    this.roSocketPath = paths.ro;
    this.rwPerms = perms;
    this.maxClients = opts.maxClients ?? MAX_CLIENTS;
    this.maxPendingOutput = opts.maxPendingOutput;
    this.log = opts.logger ?? silentDaemonLogger;
    this.core = new QubesDBCore(this.log);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** Creates the run dir, replaces stale socket files, listens on both sockets. */
  async start(): Promise<void> {
    if (this.started) throw new Error('daemon already started');
    this.started = true;
    // mkdir's mode goes through the umask; upstream's run dir is 0775, so set it when we made it.
    if (mkdirSync(this.runDir, { recursive: true }) !== undefined) chmodSync(this.runDir, 0o775);
    try {
      await this.listen(this.socketPath, false, this.rwPerms);
      await this.listen(this.roSocketPath, true, 0o666);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Closes both sockets and every client, removes our socket files. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
    for (const [path, ino] of this.ownedInodes) {
      try {
        if (lstatSync(path).ino === ino) unlinkSync(path);
      } catch {
        // already gone
      }
    }
    this.ownedInodes.clear();
  }

  private async listen(path: string, readOnly: boolean, mode: number): Promise<void> {
    removeStaleSocket(path);
    const server = createServer({ allowHalfOpen: false, pauseOnConnect: false }, (socket) => this.accept(socket, readOnly));
    server.on('error', (err) => this.log.error({ err, socket: path }, 'server socket error'));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen({ path }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.servers.push(server);
    this.ownedInodes.set(path, lstatSync(path).ino);
    // bind() applied the umask; set the mode upstream uses (0666, or --rw-socket-perms).
    chmodSync(path, mode);
  }

  private accept(socket: Socket, readOnly: boolean): void {
    if (this.clients.size >= this.maxClients) {
      this.log.warn({ clients: this.clients.size, max: this.maxClients }, 'too many clients: connection refused');
      socket.destroy();
      return;
    }
    const id = this.nextClientId++;
    const conn = new ClientConnection(id, readOnly, socket, this.core, this.log, (c) => {
      this.clients.delete(c);
      this.log.debug({ client: c.id }, 'client disconnected');
    }, this.maxPendingOutput);
    this.clients.add(conn);
    this.log.debug({ client: id, readOnly }, 'client connected');
  }
}

/** Removes a leftover socket (or symlink) at `path`; refuses to delete anything else. */
function removeStaleSocket(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket() && !st.isSymbolicLink()) throw new Error(`${path} exists and is not a socket; not removing it`);
  unlinkSync(path);
}
