// qn-tcp-hold HOST PORT [--interval MS] [--stall MS] [--duration MS]
// Holds one TCP connection to a line-echo service and sends "seq N" every interval (100 ms).
// Prints JSON lines: {"event":"connected","local","remote"}, {"event":"echo","n":N} per
// echoed line, and at the end {"event":"broken","reason",…} (exit 1: closed, reset, error, or
// no echo for --stall ms, default 2000), or {"event":"done"|"stopped","echoes":N} (exit 0)
// after --duration or on SIGTERM/SIGINT.
import { connect, isIP } from 'node:net';
import { intOption, parseArgs, usageExit } from './args.js';

const USAGE = 'qn-tcp-hold HOST PORT [--interval MS] [--stall MS] [--duration MS]';
let host: string, port: number, intervalMs: number, stallMs: number, durationMs: number;
try {
  const args = parseArgs(process.argv.slice(2), ['--interval', '--stall', '--duration']);
  if (args.positional.length !== 2) throw new Error('HOST and PORT expected');
  host = args.positional[0]!;
  port = Number(args.positional[1]);
  if (!isIP(host)) throw new Error(`not an IP address: ${host}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port ${args.positional[1]}`);
  intervalMs = intOption(args, '--interval', 100);
  stallMs = intOption(args, '--stall', 2000);
  durationMs = intOption(args, '--duration', 0);
} catch (err) {
  usageExit('qn-tcp-hold', USAGE, err);
}

const emit = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
let sent = 0, echoes = 0, lastEcho = Date.now(), finished = false, buffered = '';
const sock = connect({ host, port });
const finish = (o: object, code: number) => {
  if (finished) return;
  finished = true;
  emit({ ...o, sent, echoes });
  sock.destroy();
  process.exit(code);
};
let ticker: NodeJS.Timeout | undefined;
sock.setNoDelay(true);
sock.on('connect', () => {
  lastEcho = Date.now();
  emit({ event: 'connected', local: `${sock.localAddress}:${sock.localPort}`, remote: `${sock.remoteAddress}:${sock.remotePort}` });
  ticker = setInterval(() => {
    if (Date.now() - lastEcho > stallMs) finish({ event: 'broken', reason: 'stalled' }, 1);
    else sock.write(`seq ${++sent}\n`);
  }, intervalMs);
  if (durationMs > 0) setTimeout(() => finish({ event: 'done' }, 0), durationMs);
});
sock.on('data', (d: Buffer) => {
  buffered += d.toString('utf8');
  let nl;
  while ((nl = buffered.indexOf('\n')) >= 0) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    const m = /^seq (\d+)$/.exec(line);
    if (m) {
      echoes++;
      lastEcho = Date.now();
      emit({ event: 'echo', n: Number(m[1]) });
    }
  }
});
sock.on('error', (e: NodeJS.ErrnoException) => finish({ event: 'broken', reason: e.code ?? e.message }, 1));
sock.on('close', () => finish({ event: 'broken', reason: 'closed' }, 1));
// Before connecting the OS timeout applies; guard it with the stall limit too.
setTimeout(() => {
  if (!ticker) finish({ event: 'broken', reason: 'connect timeout' }, 1);
}, Math.max(stallMs, 1000));
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => finish({ event: 'stopped' }, 0));
