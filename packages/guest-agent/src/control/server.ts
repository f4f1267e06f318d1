// The guest daemon's control socket: a unix stream socket, root only (0600), JSON lines. The
// udev-started `qubes-net-uplink` client sends one request and waits for the reply, so an uplink
// event costs a C process instead of a Node start while the daemon is up.
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { forLog } from '@qubes-net/common/addr';
import type { Logger } from '@qubes-net/common/log';
import { formatReply, parseControlRequest, MAX_REQUEST_BYTES, type ControlRequest } from './protocol.js';
import { EXIT } from '../exit-codes.js';

/** The reply to send, or undefined to close without one (the client then runs the CLI itself). */
export type ControlHandler = (req: ControlRequest) => Promise<Record<string, unknown> | undefined>;

/** Connections served at once; the only client sends one request per uplink event. */
const MAX_CONNECTIONS = 32;
/** A connection that has not sent a whole request by then is dropped. */
const REQUEST_TIMEOUT_MS = 10_000;

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

export class ControlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly path: string, private readonly handler: ControlHandler, private readonly log: Logger) {}

  /** Listens on the path, replacing a stale socket file; fails when another daemon answers there. */
  async listen(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    if (await socketAnswers(this.path)) throw new Error(`another guest daemon answers on ${this.path}`);
    await unlink(this.path).catch(() => undefined);
    const server = createServer((sock) => this.serve(sock));
    server.maxConnections = MAX_CONNECTIONS;
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
    this.log.info({ socket: this.path }, 'control socket listening');
  }

  /** Stops listening, drops the connections still open and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await unlink(this.path).catch(() => undefined);
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined); // a client that went away; nothing to tell anyone
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => {
      this.log.warn({ source: 'control-socket' }, 'control client sent no request in time, dropped');
      sock.destroy();
    });
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
        sock.setTimeout(0); // answering may take as long as an apply pass does
        chain = chain.then(() => this.answer(sock, line));
      }
      if (Buffer.byteLength(buf) > MAX_REQUEST_BYTES) {
        this.log.error({ source: 'control-socket', value: forLog(buf), reason: `longer than ${MAX_REQUEST_BYTES} bytes` }, 'bad control request');
        buf = '';
        sock.pause();
        chain = chain.then(() => {
          sock.end(formatReply({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes`, exitCode: EXIT.usage }));
        });
      }
    });
  }

  private async answer(sock: Socket, line: string): Promise<void> {
    if (sock.destroyed) return;
    const parsed = parseControlRequest(line);
    let reply: Record<string, unknown> | undefined;
    if (!parsed.ok) {
      this.log.error({ source: 'control-socket', value: forLog(line), reason: parsed.error }, 'bad control request');
      reply = { ok: false, error: parsed.error, exitCode: EXIT.usage };
    } else {
      try {
        reply = await this.handler(parsed.request);
      } catch (err) {
        this.log.error({ source: 'control-socket', op: parsed.request.op, error: (err as Error).message }, 'control request failed');
        reply = { ok: false, error: (err as Error).message, exitCode: EXIT.kernel };
      }
    }
    if (sock.destroyed) return;
    if (reply === undefined) {
      sock.destroy();
      return;
    }
    sock.write(formatReply(reply));
    sock.setTimeout(REQUEST_TIMEOUT_MS); // idle again: the client may send another request or go
  }
}
