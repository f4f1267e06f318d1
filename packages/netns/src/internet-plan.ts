// What the fake internet holds, as data: addresses (documentation ranges only: RFC 5737
// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and RFC 3849 2001:db8::/32), names, and the
// command lines of its servers. Pure; internet.ts puts it into a namespace.
import { isIP } from 'node:net';

export const ROOT_BODY = 'qubes-net fake internet\n';

export const INTERNET = {
  /** Interface of the internet qube facing the netvm. */
  uplinkIf: 'uplink0',
  uplink4: '192.0.2.1/24',
  uplink6: '2001:db8:0:1::1/64',
  /** What configureUplink() gives the netvm by default (what DHCP would). */
  netvm4: '192.0.2.2/24',
  netvm6: '2001:db8:0:1::2/64',
  gateway4: '192.0.2.1',
  gateway6: '2001:db8:0:1::1',
  dns4: ['198.51.100.53', '198.51.100.54'] as const,
  dns6: ['2001:db8:53::53', '2001:db8:53::54'] as const,
  web4: '203.0.113.80',
  web6: '2001:db8:80::80',
  other4: '203.0.113.81',
  other6: '2001:db8:80::81',
  httpPort: 80,
  echoPorts: [1234, 4321] as const,
} as const;

export interface HostEntry {
  name: string;
  addresses: string[];
}

export const LONG_NAME = `${'a'.repeat(63)}.${'b'.repeat(63)}.example.test`;

export const DEFAULT_HOSTS: HostEntry[] = [
  { name: 'example.test', addresses: [INTERNET.web4, INTERNET.web6] },
  { name: 'www.example.test', addresses: [INTERNET.web4, INTERNET.web6] },
  { name: 'other.example.test', addresses: [INTERNET.other4, INTERNET.other6] },
  { name: 'ipv4only.example.test', addresses: [INTERNET.web4] },
  { name: 'ipv6only.example.test', addresses: [INTERNET.web6] },
  { name: 'multi.example.test', addresses: [INTERNET.web4, INTERNET.other4, INTERNET.web6, INTERNET.other6] },
  { name: LONG_NAME, addresses: [INTERNET.web4] },
];

/** alias → target (answered as CNAME plus the target's addresses). */
export const DEFAULT_CNAMES: [string, string][] = [['alias.example.test', 'www.example.test']];

/** Addresses the internet qube holds on lo (servers) besides its uplink. */
export function serviceAddresses(): string[] {
  return [...INTERNET.dns4, ...INTERNET.dns6, INTERNET.web4, INTERNET.other4, INTERNET.web6, INTERNET.other6];
}

export function dnsServers(): string[] {
  return [...INTERNET.dns4, ...INTERNET.dns6];
}

const NAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** The dnsmasq hosts file for these entries; validates names and addresses. */
export function hostsFile(entries: readonly HostEntry[]): string {
  const lines: string[] = [];
  for (const e of entries) {
    if (!NAME_RE.test(e.name)) throw new Error(`invalid host name ${JSON.stringify(e.name)}`);
    for (const a of e.addresses) {
      if (!isIP(a)) throw new Error(`invalid address ${JSON.stringify(a)} for ${e.name}`);
      lines.push(`${a} ${e.name}`);
    }
  }
  return lines.join('\n') + '\n';
}

/**
 * One dnsmasq per server address, so queries can be counted per server and one server can be
 * stopped on its own. Authoritative for our names only: anything else is NXDOMAIN.
 */
export function dnsmasqArgs(server: string, files: { hosts: string; log: string }, cnames: readonly [string, string][] = DEFAULT_CNAMES): string[] {
  if (!isIP(server)) throw new Error(`invalid DNS server address ${server}`);
  return [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--bind-interfaces',
    `--listen-address=${server}`,
    '--port=53',
    `--addn-hosts=${files.hosts}`,
    ...cnames.map(([alias, target]) => `--cname=${alias},${target}`),
    '--local=/#/',
    '--log-queries',
    `--log-facility=${files.log}`,
    '--pid-file=',
    '--user=root',
    '--group=root',
  ];
}

export interface DnsLogEntry {
  type: string;
  name: string;
  from: string;
}

/** Parses dnsmasq's query log lines (`query[A] www.example.test from 192.0.2.2`). */
export function parseQueryLog(text: string): DnsLogEntry[] {
  const out: DnsLogEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /: query\[([A-Za-z0-9]+)\] (\S+) from (\S+)$/.exec(line);
    if (m) out.push({ type: m[1]!, name: m[2]!, from: m[3]! });
  }
  return out;
}
