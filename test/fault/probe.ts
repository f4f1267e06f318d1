// The fault suite's packet probes, one process per qube (started inside its namespaces):
//   probe.js recv PORT                 prints one line per datagram: "<kind> <seq> <sentMs> <srcAddr>"
//   probe.js send FLOW...              FLOW = kind,toAddr,port,intervalMs[,fromAddr]
// Each datagram carries "<kind> <seq> <sentMs>". A flow with fromAddr binds a source address
// the qube does not own (the caller sets net.ipv4.ip_nonlocal_bind): the spoofing probe. Send
// errors (an ICMP reject coming back) are ignored: only what arrives counts.
import { createSocket, type Socket } from 'node:dgram';
import { isIPv4 } from 'node:net';

function fail(msg: string): never {
  process.stderr.write(`probe: ${msg}\n`);
  process.exit(2);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'recv') {
  const port = Number(args[0]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail('recv PORT');
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const m = /^([a-z0-9-]{1,20}) (\d{1,10}) (\d{1,15})$/.exec(msg.toString('latin1'));
    if (m) process.stdout.write(`${m[1]} ${m[2]} ${m[3]} ${rinfo.address}\n`);
    else process.stdout.write(`garbage 0 ${Date.now()} ${rinfo.address}\n`);
  });
  sock.bind(port, () => process.stdout.write(`ready 0 ${Date.now()} -\n`));
} else if (mode === 'send') {
  if (args.length === 0) fail('send FLOW...');
  const sockets: Socket[] = [];
  for (const spec of args) {
    const [kind, to, portText, intervalText, from] = spec.split(',');
    const port = Number(portText), interval = Number(intervalText);
    if (!kind || !/^[a-z0-9-]{1,20}$/.test(kind) || !to || !isIPv4(to) || !Number.isInteger(port) || !Number.isInteger(interval) || interval < 1) fail(`bad flow ${spec}`);
    if (from !== undefined && !isIPv4(from)) fail(`bad source ${from}`);
    const sock = createSocket('udp4');
    sockets.push(sock);
    sock.on('error', () => undefined);
    let seq = 0;
    sock.bind({ port: 0, ...(from ? { address: from } : {}) }, () => {
      setInterval(() => {
        sock.send(`${kind} ${seq++} ${Date.now()}`, port, to, () => undefined);
      }, interval);
    });
  }
  process.stdout.write('ready\n');
} else fail('recv PORT | send FLOW...');
