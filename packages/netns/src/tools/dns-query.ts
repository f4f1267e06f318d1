// qn-dns-query SERVER NAME [TYPE] [--timeout MS] [--port N]
// One DNS query over UDP, no retries (tests count queries per server). Prints one JSON line:
// {"server","name","type","rcode","answers":[{name,type,ttl,data}],"addresses":[…]};
// exit 0 on any reply (check rcode), 3 on timeout ({"rcode":"TIMEOUT"}) or when an ICMP error
// came back ({"rcode":"REJECTED","error":"ECONNREFUSED"}: the socket is connected so that the
// kernel reports it, as a stub resolver's is), 2 on usage errors. "ms": time to the outcome.
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { decodeReply, encodeQuery, typeCode } from '../dns-wire.js';
import { intOption, parseArgs, usageExit } from './args.js';

const USAGE = 'qn-dns-query SERVER NAME [TYPE] [--timeout MS] [--port N]';
let server: string, name: string, type: string, timeoutMs: number, port: number;
try {
  const args = parseArgs(process.argv.slice(2), ['--timeout', '--port']);
  [server, name, type = 'A'] = args.positional as [string, string, string?];
  if (args.positional.length < 2 || args.positional.length > 3) throw new Error('SERVER and NAME expected');
  if (!isIP(server)) throw new Error(`not an IP address: ${server}`);
  type = type.toUpperCase();
  typeCode(type);
  timeoutMs = intOption(args, '--timeout', 2000);
  port = intOption(args, '--port', 53);
} catch (err) {
  usageExit('qn-dns-query', USAGE, err);
}

const id = randomInt(0, 65536);
const query = encodeQuery(id, name, type);
const sock = createSocket(isIP(server) === 6 ? 'udp6' : 'udp4');
let t0 = performance.now();
const print = (o: object) => process.stdout.write(JSON.stringify({ server, name, type, ...o, ms: Math.round((performance.now() - t0) * 10) / 10 }) + '\n');
const timer = setTimeout(() => {
  print({ rcode: 'TIMEOUT', answers: [], addresses: [] });
  sock.close();
  process.exitCode = 3;
}, timeoutMs);
sock.on('message', (msg, rinfo) => {
  if (rinfo.port !== port) return;
  let reply;
  try {
    reply = decodeReply(msg);
  } catch {
    return; // garbage: keep waiting for the real reply
  }
  if (reply.id !== id || reply.question?.name.toLowerCase() !== name.replace(/\.$/, '').toLowerCase()) return;
  clearTimeout(timer);
  const addresses = reply.answers.filter((a) => a.type === 'A' || a.type === 'AAAA').map((a) => a.data);
  print({ rcode: reply.rcode, truncated: reply.truncated, answers: reply.answers, addresses });
  sock.close();
});
sock.on('error', (err) => {
  clearTimeout(timer);
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const icmp = ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EACCES', 'EPERM'].includes(code);
  print({ rcode: icmp ? 'REJECTED' : 'ERROR', error: icmp ? code : err.message, answers: [], addresses: [] });
  sock.close();
  process.exitCode = 3;
});
sock.connect(port, server, () => {
  t0 = performance.now();
  sock.send(query);
});
