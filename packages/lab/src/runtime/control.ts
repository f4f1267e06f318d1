// The running lab's control socket: each CLI invocation connects, sends one JSON request
// line, receives progress lines while the operation runs and one final reply line.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import type { ProgressEvent } from './lab.js';

export interface ControlRequest {
  op: string;
  args?: Record<string, unknown>;
}

export type ControlLine = { progress: ProgressEvent } | { ok: true; result?: unknown } | { ok: false; error: string };

const MAX_REQUEST = 1024 * 1024;

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

/** Serves requests; `broadcast` sends a progress event to every connection waiting on a reply. */
export async function serveControl(socketPath: string, handle: ControlHandler): Promise<{ server: Server; broadcast: (e: ProgressEvent) => void; close: () => Promise<void> }> {
  const waiting = new Set<Socket>();
  const send = (sock: Socket, line: ControlLine) => {
    if (!sock.destroyed) sock.write(JSON.stringify(line) + '\n');
  };
  await rm(socketPath, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => waiting.delete(sock));
    sock.on('close', () => waiting.delete(sock));
    sock.on('data', (d: string) => {
      if (buf === null) return;
      buf += d;
      if (buf.length > MAX_REQUEST) {
        send(sock, { ok: false, error: 'request too large' });
        sock.end();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const text = buf.slice(0, nl);
      buf = '';
      sock.removeAllListeners('data');
      let req: ControlRequest;
      try {
        req = JSON.parse(text);
        if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('want {"op": …}');
        if (req.args !== undefined && (typeof req.args !== 'object' || req.args === null)) throw new Error('args must be an object');
      } catch (err) {
        send(sock, { ok: false, error: `bad request: ${(err as Error).message}` });
        sock.end();
        return;
      }
      waiting.add(sock);
      handle(req).then(
        (result) => send(sock, { ok: true, ...(result !== undefined ? { result } : {}) }),
        (err) => send(sock, { ok: false, error: err instanceof Error ? err.message : String(err) }),
      ).finally(() => {
        waiting.delete(sock);
        sock.end();
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return {
    server,
    broadcast: (e) => {
      for (const s of waiting) send(s, { progress: e });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export class LabNotRunning extends Error {
  constructor(socketPath: string, cause: string) {
    super(`no lab answers on ${socketPath} (${cause})`);
    this.name = 'LabNotRunning';
  }
}

/** Sends one request; calls onProgress for each progress line; resolves with the result. */
export function callControl(socketPath: string, req: ControlRequest, onProgress?: (e: ProgressEvent) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let done = false;
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as ControlLine;
        buf = buf.slice(nl + 1);
        if ('progress' in line) onProgress?.(line.progress);
        else {
          done = true;
          if (line.ok) resolve(line.result);
          else reject(new Error(line.error));
        }
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (done) return;
      done = true;
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new LabNotRunning(socketPath, err.code) : err);
    });
    sock.on('close', () => {
      if (!done) reject(new LabNotRunning(socketPath, 'connection closed without a reply'));
    });
  });
}
