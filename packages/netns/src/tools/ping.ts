// qn-ping [-c COUNT] [-W TIMEOUT_MS] [-i INTERVAL_MS] ADDRESS[%IFNAME]
// ICMP echo over a raw socket (root), IPv4 or IPv6: for qubes where iputils may be missing.
// Prints one JSON line {"address","sent","received"}; exit 0 if a reply came, 1 if none, 2 on usage.
import { isIPv4, isIPv6 } from 'node:net';
import * as ffi from './ffi-socket.js';

function usage(msg: string): never {
  process.stderr.write(`qn-ping: ${msg}\nusage: qn-ping [-c COUNT] [-W TIMEOUT_MS] [-i INTERVAL_MS] ADDRESS[%IFNAME]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): { count: number; timeoutMs: number; intervalMs: number; address: string; ifname?: string } {
  let count = 1, timeoutMs = 1000, intervalMs = 200;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) usage(`bad value for ${a}`);
      return v;
    };
    if (a === '-c') count = num();
    else if (a === '-W') timeoutMs = num();
    else if (a === '-i') intervalMs = num();
    else rest.push(a);
  }
  if (rest.length !== 1) usage('one address expected');
  const [address, ifname] = rest[0]!.split('%') as [string, string | undefined];
  if (!isIPv4(address) && !isIPv6(address)) usage(`not an IP address: ${address}`);
  return { count: Math.max(1, count), timeoutMs, intervalMs, address, ...(ifname ? { ifname } : {}) };
}

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

function ipv6Bytes(addr: string): Buffer {
  const [head, tail] = addr.includes('::') ? addr.split('::') as [string, string] : [addr, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

const opts = parseArgs(process.argv.slice(2));
const v6 = isIPv6(opts.address);
const fd = ffi.socket(v6 ? ffi.AF_INET6 : ffi.AF_INET, ffi.SOCK_RAW | ffi.SOCK_CLOEXEC, v6 ? ffi.IPPROTO_ICMPV6 : ffi.IPPROTO_ICMP) as number;
if (fd < 0) {
  process.stderr.write('qn-ping: cannot open a raw socket (needs root)\n');
  process.exit(2);
}
let addr: Buffer;
if (v6) {
  addr = Buffer.alloc(28);
  addr.writeUInt16LE(ffi.AF_INET6, 0);
  ipv6Bytes(opts.address).copy(addr, 8);
  if (opts.ifname) addr.writeUInt32LE(ffi.ifNameToIndex(opts.ifname) as number, 24);
} else {
  addr = Buffer.alloc(16);
  addr.writeUInt16LE(ffi.AF_INET, 0);
  Buffer.from(opts.address.split('.').map(Number)).copy(addr, 4);
}
const ident = process.pid & 0xffff;
let sent = 0, received = 0;
const rbuf = Buffer.alloc(65536);
for (let seq = 1; seq <= opts.count; seq++) {
  const pkt = Buffer.alloc(8 + 16);
  pkt[0] = v6 ? 128 : 8;
  pkt.writeUInt16BE(ident, 4);
  pkt.writeUInt16BE(seq, 6);
  pkt.write('qubes-net-ping!!', 8);
  if (!v6) pkt.writeUInt16BE(checksum(pkt), 2); // the kernel fills the ICMPv6 checksum itself
  if ((ffi.sendto(fd, pkt, pkt.length, 0, addr, addr.length) as number) === pkt.length) sent++;
  const deadline = Date.now() + (seq === opts.count ? opts.timeoutMs : Math.max(opts.intervalMs, 1));
  let got = false;
  while (!got && Date.now() < deadline && ffi.waitReadable(fd, deadline - Date.now())) {
    const n = ffi.recv(fd, rbuf, rbuf.length, ffi.MSG_DONTWAIT) as number;
    if (n <= 0) continue;
    // IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
    const off = v6 ? 0 : (rbuf[0]! & 0x0f) * 4;
    if (n < off + 8) continue;
    if (rbuf[off] === (v6 ? 129 : 0) && rbuf.readUInt16BE(off + 4) === ident && rbuf.readUInt16BE(off + 6) === seq) got = true;
  }
  if (got) received++;
}
ffi.close(fd);
process.stdout.write(JSON.stringify({ address: opts.address, sent, received }) + '\n');
process.exit(received > 0 ? 0 : 1);
