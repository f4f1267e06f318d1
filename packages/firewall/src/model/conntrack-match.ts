// Which established connections a qube's new rules forbid. The forward chain accepts
// established traffic before any per-qube rule, so a rule change alone would let open
// connections go on; those the new rules would not accept are cut (conntrack -D).
//
// Unlike upstream, ports are compared as numbers (upstream compared strings: 100-200 "matched"
// 1500), the destination is the one the forward chain saw (after the DNS DNAT), and ICMP flows
// (an ongoing ping) are judged too.
import { ipv6Groups, parseIPv4, parseIPv6 } from '@qubes-net/common';
import type { Family } from './skeleton.js';
import type { Cidr } from './rules.js';
import type { EffectiveRule, L4 } from './compile.js';

export interface Tuple {
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
}

export interface Connection {
  family: Family;
  /** Protocol name as conntrack prints it (tcp, udp, icmp, ipv6-icmp, …). */
  protoName: string;
  protoNum: number;
  orig: Tuple;
  reply?: Tuple;
}

function num(text: string | undefined, max: number): number | undefined {
  if (text === undefined || !/^(0|[1-9]\d{0,9})$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function addrOf(family: Family, text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  return family === 4 ? parseIPv4(text) : parseIPv6(text);
}

/**
 * One line of `conntrack -L` (default text format). The first src/dst/sport/dport/type…
 * belong to the original direction, the second set to the reply. Undefined for anything
 * that does not look like an entry.
 */
export function parseConntrackLine(family: Family, line: string): Connection | undefined {
  const tokens = line.trim().split(/\s+/);
  if (tokens.length < 4) return undefined;
  const protoName = tokens[0]!;
  const protoNum = num(tokens[1], 255);
  if (!/^[a-z0-9-]+$/.test(protoName) || protoNum === undefined) return undefined;
  const dirs: Record<string, string>[] = [{}, {}];
  for (const tok of tokens.slice(2)) {
    const eq = tok.indexOf('=');
    if (eq <= 0) continue;
    const k = tok.slice(0, eq), v = tok.slice(eq + 1);
    const dir = dirs[0]![k] === undefined ? dirs[0]! : dirs[1]!;
    if (dir[k] === undefined) dir[k] = v;
  }
  const tuple = (d: Record<string, string>): Tuple | undefined => {
    const src = addrOf(family, d.src), dst = addrOf(family, d.dst);
    if (!src || !dst) return undefined;
    const t: Tuple = { src, dst };
    const sport = num(d.sport, 65535), dport = num(d.dport, 65535);
    if (sport !== undefined) t.sport = sport;
    if (dport !== undefined) t.dport = dport;
    const type = num(d.type, 255), code = num(d.code, 255), id = num(d.id, 65535);
    if (type !== undefined) t.icmpType = type;
    if (code !== undefined) t.icmpCode = code;
    if (id !== undefined) t.icmpId = id;
    return t;
  };
  const orig = tuple(dirs[0]!);
  if (!orig) return undefined;
  const reply = tuple(dirs[1]!);
  return reply ? { family, protoName, protoNum, orig, reply } : { family, protoName, protoNum, orig };
}

export function parseConntrackList(family: Family, text: string): Connection[] {
  const out: Connection[] = [];
  for (const line of text.split('\n')) {
    const c = parseConntrackLine(family, line);
    if (c) out.push(c);
  }
  return out;
}

function toBigInt(family: Family, addr: string): bigint {
  if (family === 4) return addr.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  return ipv6Groups(addr).reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export function cidrContains(c: Cidr, family: Family, addr: string): boolean {
  if (c.family !== family) return false;
  const bits = family === 4 ? 32 : 128;
  const shift = BigInt(bits - c.prefix);
  return toBigInt(family, addr) >> shift === toBigInt(family, c.addr) >> shift;
}

function l4Of(c: Connection): L4 | undefined {
  if (c.protoNum === 6) return 'tcp';
  if (c.protoNum === 17) return 'udp';
  if ((c.family === 4 && c.protoNum === 1) || (c.family === 6 && c.protoNum === 58)) return 'icmp';
  return undefined;
}

/** The destination and port the forward chain saw: the reply's source, after any DNAT. */
function effectiveDestination(c: Connection): { dst: string; dport?: number } {
  if (c.reply) return c.reply.sport !== undefined ? { dst: c.reply.src, dport: c.reply.sport } : { dst: c.reply.src };
  return c.orig.dport !== undefined ? { dst: c.orig.dst, dport: c.orig.dport } : { dst: c.orig.dst };
}

function ruleMatches(r: EffectiveRule, c: Connection, dnsServers: readonly string[]): boolean {
  const l4 = l4Of(c);
  const { dst, dport } = effectiveDestination(c);
  if (r.protos && (!l4 || !r.protos.includes(l4))) return false;
  if (r.daddr && !r.daddr.some((cidr) => cidrContains(cidr, c.family, dst))) return false;
  if (r.dns && !dnsServers.includes(dst)) return false;
  if (r.ports) {
    if ((l4 !== 'tcp' && l4 !== 'udp') || dport === undefined) return false;
    if (dport < r.ports.lo || dport > r.ports.hi) return false;
  }
  if (r.icmpType !== undefined && (l4 !== 'icmp' || c.orig.icmpType !== r.icmpType)) return false;
  return true;
}

/** Whether the first matching rule rejects this connection (no match at all: blocked). */
export function isBlocked(rules: readonly EffectiveRule[], c: Connection, dnsServers: readonly string[]): boolean {
  for (const r of rules) if (ruleMatches(r, c, dnsServers)) return r.verdict === 'reject';
  return true;
}

/** The connections of `source` that the rules forbid. */
export function forbiddenConnections(rules: readonly EffectiveRule[], source: string, conns: readonly Connection[], dnsServers: readonly string[]): Connection[] {
  return conns.filter((c) => c.orig.src === source && isBlocked(rules, c, dnsServers));
}

/** `conntrack -D …` arguments deleting exactly this entry (by its original tuple). */
export function conntrackDeleteArgs(c: Connection): string[] {
  const args = ['-D', '-f', c.family === 4 ? 'ipv4' : 'ipv6', '-s', c.orig.src, '-d', c.orig.dst];
  const l4 = l4Of(c);
  if ((l4 === 'tcp' || l4 === 'udp') && c.orig.sport !== undefined && c.orig.dport !== undefined) {
    args.push('-p', l4, '--sport', String(c.orig.sport), '--dport', String(c.orig.dport));
  } else if (l4 === 'icmp' && c.orig.icmpType !== undefined) {
    const p = c.family === 4 ? 'icmp' : 'icmpv6';
    args.push('-p', p, `--${p}-type`, String(c.orig.icmpType));
    if (c.orig.icmpCode !== undefined) args.push(`--${p}-code`, String(c.orig.icmpCode));
    if (c.orig.icmpId !== undefined) args.push(`--${p}-id`, String(c.orig.icmpId));
  } else {
    args.push('-p', c.protoName);
  }
  return args;
}
