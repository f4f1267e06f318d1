// A stand-in guest daemon on a unix socket: records each connection's first request line and
// lets the test decide the answer. Shared by the Node CLI and C client tests.
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

export interface FakeDaemon {
  path: string;
  requests: string[];
  server: Server;
}

let n = 0;

/** Listens on a fresh socket in `dir`; `answer` gets each connection's first line. */
export async function fakeDaemon(dir: string, answer: (line: string, sock: Socket) => void): Promise<FakeDaemon> {
  const path = join(dir, `d${++n}.sock`);
  const requests: string[] = [];
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      requests.push(line);
      answer(line, sock);
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, requests, server };
}

/** An answer that sends `text` and closes. */
export const replyWith = (text: string) => (_line: string, sock: Socket) => sock.end(text);
