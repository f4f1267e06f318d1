// The server side of the control socket: one request line per connection, one reply line,
// then the connection ends. It listens either on a socket inherited through socket
// activation (systemd, or qubes-net-watch --activate: LISTEN_FDS/LISTEN_PID, fd 3) or on a
// path it binds itself (root only, 0600). `stopAccepting` closes the listening fd without
// removing an activated socket's file, so connections arriving after it wait in the
// activator's backlog and start the next instance.
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { socketAnswers } from '../jsonl-server.js';
import type { Logger } from '../log.js';
import { formatReply, MAX_REQUEST_BYTES, parseRequest, reply, type Reply, type Request } from './protocol.js';

export const SD_LISTEN_FDS_START = 3;

/** fd 3 when this process was socket-activated (LISTEN_PID is ours and LISTEN_FDS ≥ 1). */
export function activatedFd(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  if (env.LISTEN_PID !== String(pid)) return undefined;
  const n = Number(env.LISTEN_FDS);
  return Number.isInteger(n) && n >= 1 ? SD_LISTEN_FDS_START : undefined;
}

/**
 * Thrown by a handler that must not answer: the connection is closed without a reply, which
 * the clients take as "retry" (the next instance, started by activation, serves the request).
 */
export class HangUp extends Error {
  constructor(why: string) {
    super(why);
    this.name = 'HangUp';
  }
}

export interface ControlServerOptions {
  path: string;
  /** Inherited listening fd (activation); else the path is bound. */
  fd?: number | undefined;
  log: Logger;
  handle: (req: Request) => Promise<Reply>;
  /** A connection that has sent no whole request by then is dropped. */
  requestTimeoutMs?: number;
}

export class ControlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private inFlight = 0;
  /** After stopAccepting: a request that arrives now is not answered (the client retries with the next instance). */
  private closing = false;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly opts: ControlServerOptions) {}

  get activated(): boolean {
    return this.opts.fd !== undefined;
  }

  get busy(): number {
    return this.inFlight;
  }

  async listen(): Promise<void> {
    const server = createServer({ allowHalfOpen: true }, (sock) => this.serve(sock));
    this.server = server;
    if (this.opts.fd !== undefined) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd: this.opts.fd }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      this.opts.log.info({ socket: this.opts.path, fd: this.opts.fd }, 'control socket inherited (activation)');
      return;
    }
    const path = this.opts.path;
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    if (await socketAnswers(path)) throw new Error(`another agent answers on ${path}`);
    await unlink(path).catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // bind(2) creates the file inside listen(): with this umask only root can ever use it.
      const umask = process.umask(0o177);
      try {
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    await chmod(path, 0o600);
    this.opts.log.info({ socket: path }, 'control socket listening');
  }

  /**
   * Closes the listening fd (first step of an idle exit or a stop). An activated socket stays
   * with its activator. One this process bound itself is unlinked only with `unlink` (an idle
   * exit: nobody will start the next instance, so clients should see "no agent" and use the
   * one-shot path); after a stop it stays, so clients retry until the restarted agent binds it
   * (a restart never fails an in-flight request, and no one-shot runs beside the new instance).
   */
  async stopAccepting(opts: { unlink: boolean }): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.closing = true;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    if (!this.activated && opts.unlink) await unlink(this.opts.path).catch(() => undefined);
    // server.close() calls back only once every connection ended: requests in flight finish first.
    await Promise.race([closed, this.drained()]);
  }

  /** Resolves once no request is being answered. */
  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  /** Drops connections that have not sent a request (after stopAccepting and drained). */
  dropIdle(): void {
    for (const s of this.sockets) s.destroy();
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined); // a client that went away: nothing to tell anyone
    sock.setTimeout(this.opts.requestTimeoutMs ?? 10_000, () => sock.destroy());
    let buf = '';
    let taken = false;
    sock.setEncoding('utf8');
    const take = (line: string) => {
      taken = true;
      if (this.closing) {
        // Accepted just before the listening fd closed: hang up without a reply, so that the
        // client (which retries on that) reaches the next instance instead of one shutting down.
        sock.destroy();
        return;
      }
      sock.setTimeout(0);
      sock.pause();
      void this.answer(sock, line);
    };
    sock.on('data', (chunk: string) => {
      if (taken) return;
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) take(buf.slice(0, nl));
      else if (Buffer.byteLength(buf) > MAX_REQUEST_BYTES) {
        taken = true;
        sock.end(formatReply(reply('bad-request', `request longer than ${MAX_REQUEST_BYTES} bytes`)));
      }
    });
    // A client that half-closes after its line without a newline still gets an answer.
    sock.on('end', () => {
      if (!taken && buf.trim() !== '') take(buf);
      else if (!taken) sock.end();
    });
  }

  private async answer(sock: Socket, line: string): Promise<void> {
    this.inFlight++;
    let r: Reply;
    let hangUp = false;
    try {
      const parsed = parseRequest(line);
      if (!parsed.ok) {
        this.opts.log.warn({ source: 'control-socket', reason: parsed.reply.message }, 'bad control request');
        r = parsed.reply;
      } else {
        r = await this.opts.handle(parsed.request);
      }
    } catch (err) {
      if (err instanceof HangUp) {
        hangUp = true;
        this.opts.log.info({ reason: err.message }, 'request left unanswered for the next instance');
      } else this.opts.log.error({ err: String(err) }, 'control request failed');
      r = reply('internal', String((err as Error)?.message ?? err));
    } finally {
      this.inFlight--;
    }
    if (hangUp) sock.destroy();
    else if (!sock.destroyed) sock.end(formatReply(r));
    if (this.inFlight === 0) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const f of w) f();
    }
  }
}
