// Current kernel state + desired state + what this agent owns → the `ip -batch` lines that
// converge them. Pure. Ownership:
//  - routes and neighbours we add carry `proto 75` (OWNER_PROTO), so the kernel itself tells us
//    which ones are ours, also after a restart;
//  - addresses cannot carry a tag with this iproute2, so the ones we added are kept in a small
//    record (OwnedRecord, stored under /run by the caller), valid only for the same ifindex.
// Nothing else on the link is ever deleted.
import type { DesiredAddress, DesiredNeighbour, DesiredRoute, DesiredUplink } from './desired.js';
import { mtuLine } from './mtu.js';
import type { AddressState, Family, KernelState, LinkState, NeighbourState, RouteState } from './kernel-state.js';

/** Route/neighbour protocol number marking our entries (unassigned in rtnetlink.h). */
export const OWNER_PROTO = 75;
const OWNER_PROTO_NAMES = new Set([String(OWNER_PROTO), 'qubes-net']);

export function isOwnedProtocol(protocol: string | undefined): boolean {
  return protocol !== undefined && OWNER_PROTO_NAMES.has(protocol);
}

/** The addresses this agent added to one link, as recorded after the last apply. */
export interface OwnedRecord {
  ifname: string;
  ifindex: number;
  addresses: DesiredAddress[];
}

export interface PlanChange {
  op: 'add' | 'del' | 'set';
  what: 'address' | 'neighbour' | 'route' | 'link';
  detail: string;
}

export interface UplinkPlan {
  ifname: string;
  /** The link's index, or undefined when the interface does not exist (nothing planned). */
  ifindex: number | undefined;
  lines: string[];
  changes: PlanChange[];
  /** Record to store before running the lines: everything of ours that may be on the link. */
  recordBefore: OwnedRecord | undefined;
  /** Record to store once the lines succeeded. */
  recordAfter: OwnedRecord | undefined;
}

const sameAddress = (a: AddressState | DesiredAddress, b: AddressState | DesiredAddress): boolean =>
  a.family === b.family && a.local === b.local && a.prefixlen === b.prefixlen;

/** The kernel's default metric: IPv4 routes have none (0), IPv6 routes get 1024. */
const isDefaultMetric = (r: RouteState): boolean => (r.family === 4 ? r.metric === undefined || r.metric === 0 : r.metric === undefined || r.metric === 1024);

/** Destination in a command line: explicit for a default route so the family is unambiguous. */
function dstForCommand(family: Family, dst: string): string {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  return dst;
}

function routeSatisfied(r: RouteState, want: DesiredRoute, ifname: string): boolean {
  return r.dev === ifname && r.table === undefined && r.type === 'unicast' && r.family === want.family && r.dst === want.dst &&
    r.gateway === want.gateway && r.onlink === want.onlink && isOwnedProtocol(r.protocol) && isDefaultMetric(r) &&
    (want.family === 6 || (r.scope === 'link') === want.scopeLink);
}

function neighbourSatisfied(n: NeighbourState, want: DesiredNeighbour, ifname: string): boolean {
  return n.dev === ifname && n.family === want.family && n.dst === want.dst && n.lladdr === want.lladdr &&
    n.states.includes('PERMANENT') && isOwnedProtocol(n.protocol);
}

function describeRoute(r: { family: Family; dst: string; gateway?: string | undefined }): string {
  return r.gateway ? `${r.dst} via ${r.gateway}` : r.dst;
}

function linkSatisfied(link: LinkState, want: DesiredUplink['link']): boolean {
  return want === 'up' ? link.up && link.group === '1' : !link.up;
}

export function planUplink(state: KernelState, desired: DesiredUplink, owned: OwnedRecord | undefined): UplinkPlan {
  const ifname = desired.ifname;
  const link = state.links.find((l) => l.ifname === ifname);
  if (!link) return { ifname, ifindex: undefined, lines: [], changes: [], recordBefore: undefined, recordAfter: undefined };

  const lines: string[] = [];
  const changes: PlanChange[] = [];
  const dev = `dev ${ifname}`;
  const ownedAddresses = owned && owned.ifindex === link.ifindex && owned.ifname === ifname ? owned.addresses : [];

  // 1. Routes and neighbours of ours that are no longer wanted.
  for (const r of state.routes) {
    if (r.dev !== ifname || r.table !== undefined || !isOwnedProtocol(r.protocol)) continue;
    if (desired.routes.some((w) => routeSatisfied(r, w, ifname))) continue;
    const via = r.gateway ? ` via ${r.gateway}` : '';
    const metric = r.metric !== undefined ? ` metric ${r.metric}` : '';
    lines.push(`route del ${dstForCommand(r.family, r.dst)}${via} ${dev} proto ${OWNER_PROTO}${metric}`);
    changes.push({ op: 'del', what: 'route', detail: describeRoute(r) });
  }
  for (const n of state.neighbours) {
    if (n.dev !== ifname || !isOwnedProtocol(n.protocol)) continue;
    if (desired.neighbours.some((w) => w.family === n.family && w.dst === n.dst)) continue;
    lines.push(`neigh del ${n.dst} ${dev}`);
    changes.push({ op: 'del', what: 'neighbour', detail: n.dst });
  }
  // 1b. The MTU before anything is added, so the routes below use it from their first packet.
  const mtu = mtuLine(ifname, link.mtu, desired.mtu);
  if (mtu !== undefined) {
    lines.push(mtu);
    changes.push({ op: 'set', what: 'link', detail: `mtu ${desired.mtu}` });
  }
  // 2. New addresses before old ones go: removing the last IPv4 address of a link makes the
  //    kernel flush that link's IPv4 routes and neighbours, which would undo the rest.
  for (const a of desired.addresses) {
    if (link.addresses.some((x) => sameAddress(x, a))) continue;
    // nodad: dom0 hands out unique addresses, and a tentative address could not be used for
    // the first second (upstream sets accept_dad=0 for the same reason).
    lines.push(`address replace ${a.local}/${a.prefixlen} ${dev}${a.family === 6 ? ' nodad' : ''}`);
    changes.push({ op: 'add', what: 'address', detail: `${a.local}/${a.prefixlen}` });
  }
  for (const a of ownedAddresses) {
    if (desired.addresses.some((w) => sameAddress(a, w))) continue;
    if (!link.addresses.some((x) => sameAddress(x, a))) continue;
    lines.push(`address del ${a.local}/${a.prefixlen} ${dev}`);
    changes.push({ op: 'del', what: 'address', detail: `${a.local}/${a.prefixlen}` });
  }

  // 3. The rest in upstream's order: neighbours, link, routes. (Kernel side effects this
  //    cannot foresee, e.g. a secondary address going with its primary, are caught by the
  //    caller's re-read after the batch.)
  for (const n of desired.neighbours) {
    if (state.neighbours.some((x) => neighbourSatisfied(x, n, ifname))) continue;
    lines.push(`neigh replace ${n.dst} ${dev} lladdr ${n.lladdr} nud permanent proto ${OWNER_PROTO}`);
    changes.push({ op: 'add', what: 'neighbour', detail: `${n.dst} lladdr ${n.lladdr}` });
  }
  if (!linkSatisfied(link, desired.link)) {
    lines.push(desired.link === 'up' ? `link set ${dev} group 1 up` : `link set ${dev} down`);
    changes.push({ op: 'set', what: 'link', detail: desired.link === 'up' ? 'group 1 up' : 'down' });
  }
  for (const w of desired.routes) {
    if (state.routes.some((r) => routeSatisfied(r, w, ifname))) continue;
    const via = w.gateway ? ` via ${w.gateway}` : '';
    const scope = w.scopeLink ? ' scope link' : '';
    const onlink = w.onlink ? ' onlink' : '';
    lines.push(`route replace to unicast ${dstForCommand(w.family, w.dst)}${via} ${dev}${scope}${onlink} proto ${OWNER_PROTO}`);
    changes.push({ op: 'add', what: 'route', detail: describeRoute(w) });
  }

  const stillOurs = ownedAddresses.filter((a) => link.addresses.some((x) => sameAddress(x, a)));
  const union = [...desired.addresses, ...stillOurs.filter((a) => !desired.addresses.some((w) => sameAddress(a, w)))];
  return {
    ifname,
    ifindex: link.ifindex,
    lines,
    changes,
    recordBefore: { ifname, ifindex: link.ifindex, addresses: union },
    recordAfter: { ifname, ifindex: link.ifindex, addresses: desired.addresses },
  };
}

/** Whether two records hold the same thing (so an unchanged record is not rewritten). */
export function sameRecord(a: OwnedRecord | undefined, b: OwnedRecord | undefined): boolean {
  if (!a || !b) return a === b;
  return a.ifname === b.ifname && a.ifindex === b.ifindex && a.addresses.length === b.addresses.length &&
    a.addresses.every((x) => b.addresses.some((y) => sameAddress(x, y)));
}
