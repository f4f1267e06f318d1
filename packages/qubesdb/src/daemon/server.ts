// The daemon's sockets: a read-write and a read-only AF_UNIX stream socket in the run dir,
// named like upstream's (qubesdb.sock / qubesdb.ro.sock, or qubesdb.NAME.sock /
// qubesdb.NAME.ro.sock), sharing one database and one limit of 256 clients, of which some are
// kept for the read-write socket. The limits that keep one local process from denying the
// daemon to the others (issue 13.4) are enforced here: client slots, idle and partial-message
// timeouts (a periodic sweep), and a global budget of unread output.
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { shorten as forLog, silentDaemonLogger, type DaemonLogger as Logger } from './logging.js';
import { MAX_READ_ONLY_WATCHES, MAX_WATCHES_PER_CLIENT, QubesDBCore } from './commands.js';
import { ClientConnection, MAX_PENDING_OUTPUT } from './connection.js';

export const DEFAULT_RUN_DIR = '/var/run/qubes';
/** Upstream's MAX_CLIENTS. */
export const MAX_CLIENTS = 256;

/** Resource limits against local denial of service; every one is a daemon flag. */
export interface DaemonLimits {
  /** Connections over both sockets (upstream's 256). */
  maxClients: number;
  /** Of maxClients, slots only the read-write socket may take: read-only clients get at most maxClients - this. */
  rwReservedSlots: number;
  /** Watch registrations per client; past it WATCH gets RESP_ERROR. */
  maxWatchesPerClient: number;
  /** Watch registrations over all read-only clients (memory); read-write clients are not counted. */
  maxReadOnlyWatches: number;
  /** A client with no watch, nothing pending, and no input for this long is closed (0: never). */
  idleTimeoutMs: number;
  /** A client that leaves a message incomplete for this long is closed (0: never). */
  partialTimeoutMs: number;
  /** Unread output after which one client is disconnected. */
  maxClientOutput: number;
  /** Unread output over all clients; past it the oldest backlogs are shed (0: no global budget). */
  maxTotalOutput: number;
}

export const DEFAULT_LIMITS: Readonly<DaemonLimits> = Object.freeze({
  maxClients: MAX_CLIENTS,
  rwReservedSlots: 32,
  maxWatchesPerClient: MAX_WATCHES_PER_CLIENT,
  maxReadOnlyWatches: MAX_READ_ONLY_WATCHES,
  idleTimeoutMs: 60_000,
  partialTimeoutMs: 10_000,
  maxClientOutput: MAX_PENDING_OUTPUT,
  maxTotalOutput: 64 * 1024 * 1024,
});

/** Throws on a limit set that makes no sense (the CLI has checked the numbers one by one). */
export function resolveLimits(given: Partial<DaemonLimits> = {}): DaemonLimits {
  const l: DaemonLimits = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(given) as [keyof DaemonLimits, number | undefined][]) if (v !== undefined) l[k] = v;
  // Reserved slots scale down with a small client limit unless given.
  if (given.rwReservedSlots === undefined) l.rwReservedSlots = Math.min(DEFAULT_LIMITS.rwReservedSlots, Math.floor(l.maxClients / 8));
  for (const [k, v] of Object.entries(l)) if (!Number.isSafeInteger(v) || v < 0) throw new Error(`invalid limit ${k}: ${forLog(v)}`);
  if (l.maxClients < 1) throw new Error('maxClients must be at least 1');
  if (l.rwReservedSlots >= l.maxClients) throw new Error('rwReservedSlots must leave read-only clients a slot');
  if (l.maxClientOutput < 1) throw new Error('maxClientOutput must be at least 1');
  return l;
}

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
  /** The other limits (DEFAULT_LIMITS for what is not given); maxClients/maxPendingOutput above win. */
  limits?: Partial<DaemonLimits>;
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
  readonly limits: Readonly<DaemonLimits>;
  private readonly servers: Server[] = [];
  private readonly clients = new Set<ClientConnection>();
  /** Inode of each socket file we created, so stop() removes only our own. */
  private readonly ownedInodes = new Map<string, number>();
  private nextClientId = 1;
  private started = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Unread output over all clients, an over-estimate (bytes leave without events); re-summed when past the budget. */
  private outputEstimate = 0;
  private readOnlyCount = 0;
  private refused = { count: 0, lastLog: -Infinity };

  constructor(opts: DaemonOptions = {}) {
    if (opts.name !== undefined && !isValidDaemonName(opts.name)) throw new Error(`invalid daemon name ${forLog(opts.name)}`);
    const perms = opts.rwSocketPerms ?? 0o666;
    if (!Number.isInteger(perms) || perms < 0 || perms > 0o777) throw new Error(`invalid socket permissions ${forLog(perms)}`);
    this.runDir = opts.runDir ?? DEFAULT_RUN_DIR;
    const paths = socketPaths(this.runDir, opts.name);
    this.socketPath = paths.rw;
    this.roSocketPath = paths.ro;
    this.rwPerms = perms;
    this.limits = resolveLimits({ ...opts.limits, maxClients: opts.maxClients ?? opts.limits?.maxClients, maxClientOutput: opts.maxPendingOutput ?? opts.limits?.maxClientOutput });
    this.log = opts.logger ?? silentDaemonLogger;
    this.core = new QubesDBCore(this.log, { maxWatchesPerClient: this.limits.maxWatchesPerClient, maxReadOnlyWatches: this.limits.maxReadOnlyWatches });
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
    const timeouts = [this.limits.idleTimeoutMs, this.limits.partialTimeoutMs].filter((t) => t > 0);
    if (timeouts.length > 0) {
      // A quarter of the shortest timeout: a client is closed at most 25% late. Unref'd: the
      // sweep alone must not keep the process alive.
      const every = Math.min(1000, Math.max(20, Math.floor(Math.min(...timeouts) / 4)));
      this.sweepTimer = setInterval(() => this.sweep(), every);
      this.sweepTimer.unref();
    }
  }

  /** Closes both sockets and every client, removes our socket files. */
  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
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
    const { maxClients, rwReservedSlots } = this.limits;
    if (this.clients.size >= maxClients || (readOnly && this.readOnlyCount >= maxClients - rwReservedSlots)) {
      this.refuse(readOnly);
      socket.destroy();
      return;
    }
    const id = this.nextClientId++;
    const conn = new ClientConnection(
      id,
      readOnly,
      socket,
      this.core,
      this.log,
      (c) => {
        this.clients.delete(c);
        if (c.readOnly) this.readOnlyCount--;
        this.log.debug({ client: c.id }, 'client disconnected');
      },
      this.limits.maxClientOutput,
      this.limits.maxTotalOutput > 0 ? (_c, bytes) => this.noteOutput(bytes) : undefined,
    );
    this.clients.add(conn);
    if (readOnly) this.readOnlyCount++;
    this.log.debug({ client: id, readOnly }, 'client connected');
  }

  /** Logs refused connections at most once a second (a connect flood must not flood the log). */
  private refuse(readOnly: boolean): void {
    this.refused.count++;
    const t = performance.now();
    if (t - this.refused.lastLog < 1000) return;
    const { maxClients, rwReservedSlots } = this.limits;
    this.log.warn({ clients: this.clients.size, readOnlyClients: this.readOnlyCount, maxClients, rwReservedSlots, readOnly, refused: this.refused.count }, 'too many clients: connection refused');
    this.refused = { count: 0, lastLog: t };
  }

  /** Closes clients idle or stuck mid-message past their timeout. */
  private sweep(): void {
    const { idleTimeoutMs, partialTimeoutMs } = this.limits;
    const t = performance.now();
    for (const c of this.clients) {
      if (partialTimeoutMs > 0 && c.partialFor(t, partialTimeoutMs)) c.close('incomplete message past the timeout: closing client', { timeoutMs: partialTimeoutMs });
      else if (idleTimeoutMs > 0 && c.idleFor(t, idleTimeoutMs)) c.close('idle client past the timeout: closing it', { timeoutMs: idleTimeoutMs });
    }
  }

  /**
   * The global output budget. Queued bytes are added to an estimate; only when the estimate
   * passes the budget are the real backlogs summed, and while they are over it the client
   * whose output has waited longest is shed (a slow reader, not whoever queued last),
   * read-only clients before read-write ones.
   */
  private noteOutput(bytes: number): void {
    this.outputEstimate += bytes;
    const budget = this.limits.maxTotalOutput;
    if (this.outputEstimate <= budget) return;
    let total = 0;
    const backlogged: { c: ClientConnection; since: number; pending: number }[] = [];
    for (const c of this.clients) {
      const pending = c.pendingOutput;
      if (pending === 0) continue;
      total += pending;
      backlogged.push({ c, since: c.pendingSince ?? performance.now(), pending });
    }
    if (total > budget) {
      // Read-only clients go before read-write ones (dom0, the agents), each oldest first.
      backlogged.sort((a, b) => Number(b.c.readOnly) - Number(a.c.readOnly) || a.since - b.since);
      for (const b of backlogged) {
        if (total <= budget) break;
        b.c.close('output budget of all clients exceeded: shedding the oldest backlog', { pending: b.pending, totalPending: total, budget });
        total -= b.pending;
      }
    }
    this.outputEstimate = total;
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
