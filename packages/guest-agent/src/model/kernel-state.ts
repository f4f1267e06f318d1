// The part of the kernel's state the guest agent looks at, parsed from `ip -j` output. The JSON
// comes from iproute2, not from an attacker, but it is still read defensively: anything of an
// unexpected shape is skipped rather than trusted. Addresses are canonicalised so that they
// compare equal to the parsers' output.
import * as addr from '@qubes-net/common/addr';

export type Family = 4 | 6;

export interface AddressState {
  family: Family;
  local: string;
  prefixlen: number;
}

export interface LinkState {
  ifindex: number;
  ifname: string;
  mac: string | undefined;
  up: boolean;
  /** As ip prints it: "default", "1", or a name from /etc/iproute2/group. */
  group: string;
  addresses: AddressState[];
  /** The link's MTU as the kernel reports it. */
  mtu?: number;
}

export interface RouteState {
  family: Family;
  /** As ip prints it: "default", a bare address for a host route, or "net/len". */
  dst: string;
  gateway: string | undefined;
  dev: string | undefined;
  /** undefined = main. */
  table: string | undefined;
  protocol: string;
  /** undefined = global (ip omits it). */
  scope: string | undefined;
  metric: number | undefined;
  onlink: boolean;
  type: string;
}

export interface NeighbourState {
  family: Family;
  dst: string;
  dev: string | undefined;
  lladdr: string | undefined;
  states: string[];
  protocol: string | undefined;
}

export interface KernelState {
  links: LinkState[];
  routes: RouteState[];
  neighbours: NeighbourState[];
}

type Json = Record<string, unknown>;

const arrayOf = (v: unknown): Json[] => (Array.isArray(v) ? v.filter((x): x is Json => typeof x === 'object' && x !== null) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);

function canonicalAddress(value: unknown): { family: Family; ip: string } | undefined {
  const s = str(value);
  if (s === undefined) return undefined;
  const v4 = addr.parseIPv4(s);
  if (v4) return { family: 4, ip: v4 };
  const v6 = addr.parseIPv6(s);
  return v6 ? { family: 6, ip: v6 } : undefined;
}

/** A route destination in ip's notation, canonicalised ("default", "a.b.c.d", "net/len"). */
function canonicalDst(value: string, family: Family): string | undefined {
  if (value === 'default') return value;
  const [ip, len] = value.split('/');
  const a = canonicalAddress(ip);
  if (!a || a.family !== family) return undefined;
  return len === undefined ? a.ip : `${a.ip}/${len}`;
}

export function parseLinks(json: unknown): LinkState[] {
  const links: LinkState[] = [];
  for (const l of arrayOf(json)) {
    const ifindex = l.ifindex, ifname = str(l.ifname);
    if (typeof ifindex !== 'number' || ifname === undefined) continue;
    const flags = Array.isArray(l.flags) ? l.flags.map(String) : [];
    const addresses: AddressState[] = [];
    for (const a of arrayOf(l.addr_info)) {
      const local = canonicalAddress(a.local);
      if (!local || typeof a.prefixlen !== 'number') continue;
      addresses.push({ family: local.family, local: local.ip, prefixlen: a.prefixlen });
    }
    const mac = str(l.address);
    const link: LinkState = { ifindex, ifname, mac: mac && addr.parseMac(mac), up: flags.includes('UP'), group: str(l.group) ?? 'default', addresses };
    if (typeof l.mtu === 'number') link.mtu = l.mtu;
    links.push(link);
  }
  return links;
}

export function parseRoutes(json: unknown, family: Family): RouteState[] {
  const routes: RouteState[] = [];
  for (const r of arrayOf(json)) {
    const dstRaw = str(r.dst);
    const dst = dstRaw === undefined ? undefined : canonicalDst(dstRaw, family);
    if (dst === undefined) continue;
    const gw = r.gateway === undefined ? undefined : canonicalAddress(r.gateway);
    const flags = Array.isArray(r.flags) ? r.flags.map(String) : [];
    routes.push({
      family,
      dst,
      gateway: gw?.ip,
      dev: str(r.dev),
      table: str(r.table),
      protocol: str(r.protocol) ?? 'boot',
      scope: str(r.scope),
      metric: typeof r.metric === 'number' ? r.metric : undefined,
      onlink: flags.includes('onlink'),
      type: str(r.type) ?? 'unicast',
    });
  }
  return routes;
}

export function parseNeighbours(json: unknown): NeighbourState[] {
  const out: NeighbourState[] = [];
  for (const n of arrayOf(json)) {
    const dst = canonicalAddress(n.dst);
    if (!dst) continue;
    const lladdr = str(n.lladdr);
    out.push({
      family: dst.family,
      dst: dst.ip,
      dev: str(n.dev),
      lladdr: lladdr && addr.parseMac(lladdr.toLowerCase()),
      states: Array.isArray(n.state) ? n.state.map(String) : [],
      protocol: str(n.protocol),
    });
  }
  return out;
}

/**
 * The `ip -batch` read commands whose JSON outputs `parseKernelState` expects, one JSON
 * document per line, in this order. `root <family-default>` selects one family per line.
 */
export const STATE_READ_COMMANDS: readonly string[] = [
  'address show',
  'route show table all root 0.0.0.0/0',
  'route show table all root ::/0',
  'neigh show',
];

/** Parses the output of STATE_READ_COMMANDS run as one `ip -j -batch -`. */
export function parseKernelState(output: string): KernelState {
  const docs = output.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (docs.length !== STATE_READ_COMMANDS.length) {
    throw new Error(`ip -j -batch printed ${docs.length} JSON documents, expected ${STATE_READ_COMMANDS.length}`);
  }
  const [links, routes4, routes6, neigh] = docs.map((d) => JSON.parse(d) as unknown);
  return {
    links: parseLinks(links),
    routes: [...parseRoutes(routes4, 4), ...parseRoutes(routes6, 6)],
    neighbours: parseNeighbours(neigh),
  };
}
