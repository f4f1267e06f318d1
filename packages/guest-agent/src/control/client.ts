// The CLI's side of the guest daemon's control socket: `apply`/`remove` started directly while
// the daemon runs hand the request to it (as qubes-net-uplink does), so the uplink never has
// two writers. node:net only, so the cold path (no daemon) costs one connect() attempt.
//
// Outcomes, the same rules as qubes-net-uplink (native-bindings/src/uplink.c):
// - nobody answers (socket file missing, connection refused), or the daemon closes the
//   connection without replying (it is stopping), or it went away before the request was
//   sent: 'no-daemon', and the CLI does the work in its own process;
// - a reply line: 'reply' with it parsed (or 'failed' when it is not a reply we can use);
// - any other error (permission, timeout, a reply over the size limit): 'failed', never a
//   silent fallback that would make a second writer.
import { connect } from 'node:net';
import type { ControlRequest } from './protocol.js';

/** Longest reply line read (bytes), as in qubes-net-uplink. */
const MAX_REPLY_BYTES = 8192;
export const DEFAULT_REPLY_TIMEOUT_MS = 30_000;

export interface ControlReply {
  ok: boolean;
  exitCode: number;
  result?: string;
  detail?: string;
  error?: string;
  [k: string]: unknown;
}

export type DaemonOutcome =
  | { kind: 'no-daemon'; reason: string }
  | { kind: 'reply'; reply: ControlReply }
  | { kind: 'failed'; error: string };

/** Reads a reply line strictly: an object with a boolean ok and an integer exitCode 0-255 (ok:false may omit it: 3). */
export function parseControlReply(line: string): ControlReply | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.ok !== 'boolean') return undefined;
  const code = o.exitCode;
  const validCode = typeof code === 'number' && Number.isInteger(code) && code >= 0 && code <= 255;
  if (code !== undefined && !validCode) return undefined;
  if (o.ok && !validCode) return undefined;
  return { ...o, ok: o.ok, exitCode: validCode ? (code as number) : 3 } as ControlReply;
}

/** Sends one request to the daemon at `path` and waits for its one reply line. */
export function askDaemon(path: string, req: ControlRequest, timeoutMs = DEFAULT_REPLY_TIMEOUT_MS): Promise<DaemonOutcome> {
  return new Promise((resolve) => {
    let connected = false;
    let buf = '';
    let done = false;
    const finish = (o: DaemonOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(o);
    };
    const sock = connect(path);
    const timer = setTimeout(() => finish({ kind: 'failed', error: `no reply from ${path} within ${timeoutMs} ms` }), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => {
      connected = true;
      sock.write(JSON.stringify(req) + '\n');
    });
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (Buffer.byteLength(buf) > MAX_REPLY_BYTES) finish({ kind: 'failed', error: `reply from ${path} too long` });
        return;
      }
      const reply = parseControlReply(buf.slice(0, nl));
      finish(reply ? { kind: 'reply', reply } : { kind: 'failed', error: `unreadable reply from ${path}` });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (!connected && (code === 'ENOENT' || code === 'ECONNREFUSED')) finish({ kind: 'no-daemon', reason: code });
      else if (connected && buf === '' && (code === 'EPIPE' || code === 'ECONNRESET')) finish({ kind: 'no-daemon', reason: `${code} before a reply` });
      else finish({ kind: 'failed', error: `${path}: ${err.message}` });
    });
    sock.on('close', () => {
      if (buf === '') finish({ kind: 'no-daemon', reason: 'closed without a reply' });
      else finish({ kind: 'failed', error: `reply from ${path} cut short` });
    });
  });
}
