// The driver's control socket: a unix stream socket (root only) speaking JSON lines. The
// hotplug client sends one vif event and waits for its reply; the CLI asks for status,
// dns-changed and reconcile.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '@qubes-net/common';
import { forLog } from '@qubes-net/common';
import { parseRequest, formatReply, MAX_REQUEST_BYTES, type Request } from './protocol.js';

export type Handler = (req: Request) => Promise<{ ok: boolean } & Record<string, unknown>>;

/** Whether something answers on `path` (a live daemon), so a stale socket file can be removed. */
export function socketAlive(path: string): Promise<boolean> {
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

  constructor(private readonly path: string, private readonly handler: Handler, private readonly log: Logger) {}

  async listen(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    if (await socketAlive(this.path)) throw new Error(`another driver daemon answers on ${this.path}`);
    await unlink(this.path).catch(() => undefined);
    const server = createServer((sock) => this.serve(sock));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.path, 0o600);
    this.log.info({ socket: this.path }, 'control socket listening');
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    let busy = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES && !buf.includes('\n')) {
        this.log.error({ source: 'control-socket', value: forLog(buf) }, 'request too long');
        sock.end(formatReply({ ok: false, error: 'request too long' }));
        buf = '';
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        busy = busy.then(() => this.answer(sock, line));
      }
    });
  }

  private async answer(sock: Socket, line: string): Promise<void> {
    const parsed = parseRequest(line);
    let reply: { ok: boolean } & Record<string, unknown>;
    if (!parsed.ok) {
      this.log.error({ source: 'control-socket', value: forLog(line), reason: parsed.error }, 'bad control request');
      reply = { ok: false, error: parsed.error };
    } else {
      try {
        reply = await this.handler(parsed.request);
      } catch (err) {
        this.log.error({ op: parsed.request.op, err: String(err) }, 'control request failed');
        reply = { ok: false, error: String(err) };
      }
    }
    if (!sock.destroyed) sock.write(formatReply(reply));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await unlink(this.path).catch(() => undefined);
  }
}
