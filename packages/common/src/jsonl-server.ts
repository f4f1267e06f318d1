// The mechanism behind the agents' control sockets: a unix stream socket, root only (0600),
// speaking JSON lines — one reply line per request line, answered in order. What a request
// means (parsing, the handler, the reply's fields) stays with each agent; this module only
// moves lines. node:net and node:fs only, so it stays cheap to import for agents that start
// per event.
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from './log.js';

/** Whether a process answers on `path`, so that a stale socket file can be told from a live daemon. */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The connection a request line came from, as far as the answering code needs to know it. */
export interface JsonlClient {
  /** The connection is already gone (the client hung up, or an earlier reply closed it). */
  readonly gone: boolean;
}

export interface JsonlServerOptions {
  /** Who serves the socket, for the error when another one already answers there ("driver daemon"). */
  owner: string;
  log: Logger;
  /** Longest unfinished request buffered (bytes); past it `tooLong` answers and the connection ends. */
  maxRequestBytes: number;
  /** One request line (without its newline) → one reply line, or undefined to close without a reply. */
  answer: (line: string, client: JsonlClient) => Promise<string | undefined>;
  /** The reply line for a request that grew past maxRequestBytes (the agent logs it here). */
  tooLong: (partial: string) => string;
  /** Connections served at once; unlimited when unset. */
  maxConnections?: number;
  /** A connection that has not sent a whole request by then is dropped; no limit when unset. */
  requestTimeoutMs?: number;
}

export class JsonlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly path: string, private readonly opts: JsonlServerOptions) {}

  /** Listens on the path, replacing a stale socket file; fails when another daemon answers there. */
  async listen(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    if (await socketAnswers(this.path)) throw new Error(`another ${this.opts.owner} answers on ${this.path}`);
    await unlink(this.path).catch(() => undefined);
    const server = createServer((sock) => this.serve(sock));
    if (this.opts.maxConnections !== undefined) server.maxConnections = this.opts.maxConnections;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket is created by bind(2), synchronously inside listen(): with this umask it is
      // never accessible to anyone but root, not even between bind and the chmod below.
      const umask = process.umask(0o177);
      try {
        server.listen(this.path, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    await chmod(this.path, 0o600);
    this.opts.log.info({ socket: this.path }, 'control socket listening');
  }

  /** Stops listening, drops the connections still open and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    // Connections are dropped before waiting: server.close() only calls back once they are gone.
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const s of this.sockets) s.destroy();
    await closed;
    await unlink(this.path).catch(() => undefined);
  }

  private serve(sock: Socket): void {
    const timeoutMs = this.opts.requestTimeoutMs;
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined); // a client that went away; nothing to tell anyone
    if (timeoutMs !== undefined) {
      sock.setTimeout(timeoutMs, () => {
        this.opts.log.warn({ source: 'control-socket' }, 'control client sent no request in time, dropped');
        sock.destroy();
      });
    }
    const client: JsonlClient = {
      get gone() {
        return sock.destroyed;
      },
    };
    let buf = '';
    let chain = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        if (timeoutMs !== undefined) sock.setTimeout(0); // answering may take as long as the work does
        chain = chain.then(() => this.reply(sock, line, client));
      }
      if (Buffer.byteLength(buf) > this.opts.maxRequestBytes) {
        // A line that never ends is cut off here, not buffered without bound.
        const reply = this.opts.tooLong(buf);
        buf = '';
        sock.pause();
        chain = chain.then(() => {
          sock.end(reply);
        });
      }
    });
  }

  private async reply(sock: Socket, line: string, client: JsonlClient): Promise<void> {
    const reply = await this.opts.answer(line, client);
    if (sock.destroyed) return;
    if (reply === undefined) {
      sock.destroy();
      return;
    }
    sock.write(reply);
    // Idle again: the client may send another request or go.
    if (this.opts.requestTimeoutMs !== undefined) sock.setTimeout(this.opts.requestTimeoutMs);
  }
}
