// Client side of the control socket (CLI commands). A missing or dead socket is reported
// as NoDaemonError so the caller can fall back to doing the work itself.
import { connect } from 'node:net';

export class NoDaemonError extends Error {
  constructor(path: string, code: string) {
    super(`no driver daemon on ${path} (${code})`);
    this.name = 'NoDaemonError';
  }
}

export function request(path: string, req: Record<string, unknown>, timeoutMs = 120_000): Promise<Record<string, unknown> & { ok: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    let connected = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no reply from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(JSON.stringify(req) + '\n');
    });
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      try {
        resolve(JSON.parse(buf.slice(0, nl)));
      } catch {
        reject(new Error('daemon sent a reply that is not JSON'));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) reject(new NoDaemonError(path, err.code));
      else reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error('daemon closed the connection without a reply'));
    });
  });
}
