// udp-probe --to ADDR --name NAME [--from ADDR] [--port 53] [--timeout MS]
// Sends one DNS query (type A) for NAME over UDP to ADDR, optionally from a source address
// the qube does not own (the caller enables net.ipv4.ip_nonlocal_bind in the qube first): the
// lab's anti-spoofing check. Prints {"replied":bool,"from":…}; exit 0 either way, 2 on usage.
import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';

function usage(msg: string): never {
  process.stderr.write(`udp-probe: ${msg}\nusage: udp-probe --to ADDR --name NAME [--from ADDR] [--port N] [--timeout MS]\n`);
  process.exit(2);
}

const opts: Record<string, string> = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i]!, v = argv[i + 1];
  if (!['--to', '--from', '--name', '--port', '--timeout'].includes(k) || v === undefined) usage(`bad argument ${k}`);
  opts[k.slice(2)] = v;
}
const to = opts.to ?? usage('--to is needed');
const name = opts.name ?? usage('--name is needed');
if (!isIPv4(to)) usage('--to must be an IPv4 address');
if (opts.from !== undefined && !isIPv4(opts.from)) usage('--from must be an IPv4 address');
if (!/^[a-z0-9.-]{1,200}$/.test(name)) usage('bad name');
const port = Number(opts.port ?? 53);
const timeoutMs = Number(opts.timeout ?? 1000);
if (!Number.isInteger(port) || port < 1 || port > 65535 || !Number.isInteger(timeoutMs)) usage('bad number');

function query(id: number, qname: string): Buffer {
  const labels = qname.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // recursion desired
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

const sock = createSocket('udp4');
const done = (replied: boolean) => {
  process.stdout.write(JSON.stringify({ replied, from: opts.from ?? null, to, name }) + '\n');
  sock.close();
  process.exit(0);
};
sock.on('error', (err) => {
  process.stderr.write(`udp-probe: ${err.message}\n`);
  process.exit(1);
});
sock.on('message', () => done(true));
sock.bind({ port: 0, ...(opts.from ? { address: opts.from } : {}) }, () => {
  sock.send(query(Math.floor(Math.random() * 65536), name), port, to);
  setTimeout(() => done(false), timeoutMs);
});
