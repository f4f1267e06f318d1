// The client side of the control socket for the TypeScript command lines: one connection,
// one request, one reply. A socket file that does not exist is reported as NoAgentError (the
// caller then does the work itself, in-process); a socket that exists is waited on, since
// under activation the agent may still be starting.
import { connect } from 'node:net';
import { parseReply, reply, type Reply } from './protocol.js';

export class NoAgentError extends Error {
  constructor(readonly path: string, readonly errno: string) {
    super(`no agent on ${path} (${errno})`);
    this.name = 'NoAgentError';
  }
}

/**
 * Sends `req` and resolves with the reply. Rejects with NoAgentError when the socket file is
 * missing (or, with `refusedIsAbsent`, when nobody listens on it); a timeout or a hang-up
 * without a reply resolve as a reply with code timeout / internal.
 */
export function controlRequest(path: string, req: Record<string, unknown>, opts: { timeoutMs?: number; refusedIsAbsent?: boolean } = {}): Promise<Reply> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    let done = false;
    const finish = (r: Reply | Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const timer = setTimeout(() => finish(reply('timeout', `no reply from ${path} within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(parseReply(buf.slice(0, nl)));
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || (opts.refusedIsAbsent && err.code === 'ECONNREFUSED')) finish(new NoAgentError(path, err.code));
      else finish(reply('internal', `${path}: ${err.message}`));
    });
    sock.on('close', () => finish(reply('stopping', `${path} closed the connection without a reply`)));
  });
}
