// A minimal DNS message codec (RFC 1035) for the qn-dns-query probe: one question out, the
// answer section back. Pure; replies are untrusted and every read is bounds-checked.

export const DNS_TYPES: Record<string, number> = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, ANY: 255 };
const TYPE_NAMES = Object.fromEntries(Object.entries(DNS_TYPES).map(([k, v]) => [v, k])) as Record<number, string>;
export const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

export interface DnsAnswer {
  name: string;
  type: string;
  ttl: number;
  /** Address for A/AAAA, target name for CNAME/NS/PTR, text for TXT, hex otherwise. */
  data: string;
}

export interface DnsReply {
  id: number;
  rcode: string;
  truncated: boolean;
  question: { name: string; type: string } | undefined;
  answers: DnsAnswer[];
}

export function encodeName(name: string): Buffer {
  const trimmed = name.replace(/\.$/, '');
  const labels = trimmed === '' ? [] : trimmed.split('.');
  const parts: Buffer[] = [];
  for (const label of labels) {
    const b = Buffer.from(label, 'ascii');
    if (b.length === 0 || b.length > 63) throw new Error(`invalid DNS name ${JSON.stringify(name)}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new Error(`DNS name too long: ${name.length} characters`);
  return out;
}

export function typeCode(type: string): number {
  const upper = type.toUpperCase();
  if (upper in DNS_TYPES) return DNS_TYPES[upper]!;
  const m = /^TYPE(\d{1,5})$/.exec(upper);
  if (m && Number(m[1]) < 65536) return Number(m[1]);
  throw new Error(`unknown DNS type ${JSON.stringify(type)}`);
}

export function typeName(code: number): string {
  return TYPE_NAMES[code] ?? `TYPE${code}`;
}

/** A recursion-desired query for one name and type. */
export function encodeQuery(id: number, name: string, type: string): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(typeCode(type), 0);
  tail.writeUInt16BE(1, 2); // class IN
  return Buffer.concat([header, encodeName(name), tail]);
}

function need(buf: Buffer, off: number, len: number): void {
  if (off < 0 || off + len > buf.length) throw new Error('truncated DNS message');
}

/** Reads a (possibly compressed) name at `off`; returns it and the offset after it. */
export function decodeName(buf: Buffer, off: number): [string, number] {
  const labels: string[] = [];
  let end = -1;
  let jumps = 0;
  for (;;) {
    need(buf, off, 1);
    const len = buf[off]!;
    if (len === 0) {
      off += 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      need(buf, off, 2);
      if (++jumps > 32) throw new Error('DNS name compression loop');
      if (end < 0) end = off + 2;
      off = buf.readUInt16BE(off) & 0x3fff;
      continue;
    }
    if (len & 0xc0) throw new Error('bad DNS label');
    need(buf, off + 1, len);
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  return [labels.join('.'), end >= 0 ? end : off];
}

function ipv6Text(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // compress the longest run of zero groups
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function decodeReply(buf: Buffer): DnsReply {
  need(buf, 0, 12);
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (!(flags & 0x8000)) throw new Error('not a DNS reply');
  const qd = buf.readUInt16BE(4), an = buf.readUInt16BE(6);
  let off = 12;
  let question: DnsReply['question'];
  for (let i = 0; i < qd; i++) {
    const [name, next] = decodeName(buf, off);
    need(buf, next, 4);
    if (i === 0) question = { name, type: typeName(buf.readUInt16BE(next)) };
    off = next + 4;
  }
  const answers: DnsAnswer[] = [];
  for (let i = 0; i < an; i++) {
    const [name, next] = decodeName(buf, off);
    need(buf, next, 10);
    const type = buf.readUInt16BE(next);
    const ttl = buf.readUInt32BE(next + 4);
    const rdlen = buf.readUInt16BE(next + 8);
    const rd = next + 10;
    need(buf, rd, rdlen);
    const raw = buf.subarray(rd, rd + rdlen);
    let data: string;
    if (type === 1 && rdlen === 4) data = [...raw].join('.');
    else if (type === 28 && rdlen === 16) data = ipv6Text(raw);
    else if (type === 5 || type === 2 || type === 12) data = decodeName(buf, rd)[0];
    else if (type === 16) {
      const texts: string[] = [];
      for (let p = 0; p < raw.length; ) {
        const l = raw[p]!;
        texts.push(raw.toString('latin1', p + 1, Math.min(raw.length, p + 1 + l)));
        p += 1 + l;
      }
      data = texts.join('');
    } else data = raw.toString('hex');
    answers.push({ name, type: typeName(type), ttl, data });
    off = rd + rdlen;
  }
  return { id, rcode: RCODES[flags & 0x0f] ?? `RCODE${flags & 0x0f}`, truncated: (flags & 0x0200) !== 0, question, answers };
}
