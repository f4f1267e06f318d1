// qn-services --addr ADDR... [--http-port 80] [--echo-port 1234 --echo-port 4321]
// The fake internet's servers, one process: HTTP on every address (GET / answers a fixed body,
// GET /whoami the client's address, any other path its own name) and a line-echo TCP service
// on the echo ports. Prints {"event":"listening"} once every socket is bound, then one JSON
// line per accepted connection {"event":"conn","service","local","remote"}.
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, isIP, type Server } from 'node:net';
import { parseArgs, usageExit } from './args.js';

import { ROOT_BODY } from '../internet-plan.js';
const USAGE = 'qn-services --addr ADDR [--addr ADDR…] [--http-port N] [--echo-port N…]';
let addrs: string[], httpPort: number, echoPorts: number[];
try {
  const args = parseArgs(process.argv.slice(2), ['--addr', '--http-port', '--echo-port']);
  addrs = args.options.get('--addr') ?? [];
  if (addrs.length === 0 || addrs.some((a) => !isIP(a))) throw new Error('--addr IP needed');
  const port = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`bad port ${v}`);
    return n;
  };
  httpPort = port(args.options.get('--http-port')?.at(-1) ?? '80');
  echoPorts = (args.options.get('--echo-port') ?? ['1234', '4321']).map(port);
} catch (err) {
  usageExit('qn-services', USAGE, err);
}

const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
const hostPort = (a: string | undefined, p: number | undefined) => (a && a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);
const servers: Server[] = [];

function http(): Server {
  const srv = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    // /bytes/N: N bytes (at most 10 MB), for transfers larger than one packet (MTU tests).
    const bytes = /^\/bytes\/([1-9][0-9]{0,7})$/.exec(path);
    const size = bytes ? Math.min(Number(bytes[1]), 10_000_000) : 0;
    const body = bytes ? 'x'.repeat(size) : path === '/' ? ROOT_BODY : path === '/whoami' ? `${req.socket.remoteAddress}\n` : `${path}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': hostPort(req.socket.localAddress, req.socket.localPort) });
    res.end(body);
  });
  srv.on('connection', (s) => emit({ event: 'conn', service: 'http', local: hostPort(s.localAddress, s.localPort), remote: hostPort(s.remoteAddress, s.remotePort) }));
  return srv;
}

function echo(): Server {
  return createTcpServer((s) => {
    emit({ event: 'conn', service: 'echo', local: hostPort(s.localAddress, s.localPort), remote: hostPort(s.remoteAddress, s.remotePort) });
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
}

const listens: Promise<void>[] = [];
for (const addr of addrs) {
  for (const [srv, port] of [[http(), httpPort] as const, ...echoPorts.map((p) => [echo(), p] as const)]) {
    servers.push(srv);
    listens.push(new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host: addr, port, ipv6Only: true }, () => resolve());
    }));
  }
}
Promise.all(listens).then(
  () => emit({ event: 'listening', addresses: addrs, httpPort, echoPorts }),
  (err: Error) => {
    process.stderr.write(`qn-services: ${err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => process.exit(0));
