// `qubes-net-guest status`: what the kernel holds for the uplink, what QubesDB asks for, and
// whether they match (no pending change, resolv.conf as it should be).
import type { QubesDB } from '@qubes-net/qubesdb';
import * as addr from '@qubes-net/common/addr';
import { evaluate, type AgentPaths } from './apply.js';
import { KEY } from './model/keys.js';
import { isOwnedProtocol, type PlanChange } from './model/plan.js';
import { isProtectedFile, readRegularFile } from './kernel/resolv-conf.js';
import { networkManagerStatus, type NmStatus } from './network-manager/apply-nm.js';
import { chooseNetworkManager, DEFAULT_NM_PATHS } from './network-manager/nmcli.js';
import { DEFAULT_SERVICE_DIR } from './kernel/service-flag.js';

export interface StatusReport {
  matches: boolean;
  uplink: { ifname: string; chosenBy: string; present: boolean; ifindex?: number; mac?: string; up?: boolean; group?: string };
  qubesdb:
    | { kind: 'ok'; ip: string; prefix: number; gateway?: string; ip6?: string; prefix6: number; gateway6?: string; dns: string[]; layout: string; disableDefaultRoute: boolean; disableDnsServer: boolean }
    | { kind: 'unconfigured'; key: string }
    | { kind: 'invalid'; issues: { key: string; value: string; reason: string }[] };
  providesNetwork: boolean;
  kernel: { addresses: string[]; ourRoutes: string[]; ourNeighbours: string[] };
  /** What `apply` would change now. */
  pending: PlanChange[];
  resolvConf: { path: string; matches: boolean; note: string };
  /** The last `/qubes-uplink-status` written by an apply. */
  feedback?: string;
  /** Present when the uplink is NetworkManager's (network-manager service, nmcli installed). */
  networkManager?: NmStatus;
}

export async function collectStatus(db: QubesDB, paths: AgentPaths, iface?: string): Promise<StatusReport> {
  const [ev, feedback] = await Promise.all([evaluate(db, paths, iface), db.read(KEY.uplinkStatus)]);
  const { choice, outcome, desired, plan, state } = ev;
  const link = state.links.find((l) => l.ifname === choice.ifname);

  let resolvConf: StatusReport['resolvConf'];
  if (desired.resolvConf.action === 'leave') {
    resolvConf = { path: paths.resolvConf, matches: true, note: `left alone: ${desired.resolvConf.reason}` };
  } else {
    const prot = await isProtectedFile(paths.resolvConf, paths.protectedDirs);
    if (prot.protected) {
      resolvConf = { path: paths.resolvConf, matches: true, note: `protected (listed in ${prot.listedIn})` };
    } else {
      const actual = await readRegularFile(paths.resolvConf);
      const ok = actual === desired.resolvConf.content;
      resolvConf = { path: paths.resolvConf, matches: ok, note: ok ? 'as QubesDB says' : actual === undefined ? 'missing or not a regular file' : 'differs from QubesDB' };
    }
  }

  let qubesdb: StatusReport['qubesdb'];
  if (outcome.kind === 'ok') {
    const c = outcome.config;
    qubesdb = { kind: 'ok', ip: c.ip, prefix: c.prefix, prefix6: c.prefix6, dns: c.dns, layout: c.layout, disableDefaultRoute: c.disableDefaultRoute, disableDnsServer: c.disableDnsServer };
    if (c.gateway) qubesdb.gateway = c.gateway;
    if (c.ip6) qubesdb.ip6 = c.ip6;
    if (c.gateway6) qubesdb.gateway6 = c.gateway6;
  } else if (outcome.kind === 'unconfigured') {
    qubesdb = { kind: 'unconfigured', key: outcome.issue.key };
  } else {
    qubesdb = { kind: 'invalid', issues: outcome.issues.map((i) => ({ key: i.key, value: addr.forLog(i.value ?? ''), reason: i.reason })) };
  }

  const uplink: StatusReport['uplink'] = { ifname: choice.ifname, chosenBy: choice.by, present: link !== undefined };
  if (link) Object.assign(uplink, { ifindex: link.ifindex, mac: link.mac, up: link.up, group: link.group });
  const kernel = {
    addresses: (link?.addresses ?? []).map((a) => `${a.local}/${a.prefixlen}`),
    ourRoutes: state.routes.filter((r) => r.dev === choice.ifname && isOwnedProtocol(r.protocol)).map((r) => (r.gateway ? `${r.dst} via ${r.gateway}` : r.dst)),
    ourNeighbours: state.neighbours.filter((n) => n.dev === choice.ifname && isOwnedProtocol(n.protocol)).map((n) => `${n.dst} lladdr ${n.lladdr ?? '?'}`),
  };
  const linkOk = link !== undefined || outcome.kind === 'unconfigured';
  const nmPaths = paths.networkManager ?? DEFAULT_NM_PATHS;
  if (link && (await chooseNetworkManager(db, paths.serviceDir ?? DEFAULT_SERVICE_DIR, nmPaths)).use) {
    // NetworkManager owns addresses, routes and resolv.conf: only the keyfile and our few lines count.
    const nm = await networkManagerStatus({ ifname: choice.ifname, state, outcome, desired, ipv6: ev.ipv6, paths: nmPaths });
    const matches = outcome.kind === 'ok' && nm.keyfileMatches && nm.pending.length === 0;
    const pending: PlanChange[] = nm.pending.map((l) => ({ op: 'set', what: l.startsWith('neigh') ? 'neighbour' : 'link', detail: l }));
    const nmResolv = { path: paths.resolvConf, matches: true, note: 'NetworkManager\'s' };
    const report: StatusReport = { matches, uplink, qubesdb, providesNetwork: outcome.providesNetwork, kernel, pending, resolvConf: nmResolv, networkManager: nm };
    if (feedback !== undefined) report.feedback = addr.forLog(feedback, 240);
    return report;
  }
  const matches = outcome.kind !== 'invalid' && linkOk && plan.lines.length === 0 && resolvConf.matches;
  const report: StatusReport = { matches, uplink, qubesdb, providesNetwork: outcome.providesNetwork, kernel, pending: plan.changes, resolvConf };
  if (feedback !== undefined) report.feedback = addr.forLog(feedback, 240);
  return report;
}

export function formatStatusText(r: StatusReport): string {
  const out: string[] = [];
  const u = r.uplink;
  out.push(`uplink      ${u.ifname} (${u.chosenBy})${u.present ? `: ifindex ${u.ifindex}, mac ${u.mac ?? '?'}, ${u.up ? 'up' : 'down'}, group ${u.group}` : ': interface missing'}`);
  const q = r.qubesdb;
  if (q.kind === 'ok') {
    out.push(`qubesdb     ${q.ip}/${q.prefix} gateway ${q.gateway ?? '-'}${q.ip6 ? `, ${q.ip6}/${q.prefix6} gateway ${q.gateway6 ?? '-'}` : ''}, dns ${q.dns.join(' ') || '-'} (${q.layout} layout)`);
    const services = [q.disableDefaultRoute && 'disable-default-route', q.disableDnsServer && 'disable-dns-server'].filter(Boolean);
    if (services.length) out.push(`services    ${services.join(', ')}`);
  } else if (q.kind === 'unconfigured') {
    out.push(`qubesdb     no address assigned (${q.key} missing)`);
  } else {
    for (const i of q.issues) out.push(`qubesdb     INVALID ${i.key} = ${JSON.stringify(i.value)}: ${i.reason}`);
  }
  out.push(`addresses   ${r.kernel.addresses.join(' ') || '-'}`);
  out.push(`routes      ${r.kernel.ourRoutes.join(', ') || '-'}`);
  out.push(`neighbours  ${r.kernel.ourNeighbours.join(', ') || '-'}`);
  out.push(`resolv.conf ${r.resolvConf.path}: ${r.resolvConf.note}`);
  if (r.networkManager) out.push(`NM keyfile  ${r.networkManager.keyfile}: ${r.networkManager.keyfileMatches ? 'as QubesDB says' : 'differs from QubesDB or missing'}`);
  if (r.feedback !== undefined) out.push(`last apply  ${r.feedback}`);
  for (const c of r.pending) out.push(`pending     ${c.op} ${c.what} ${c.detail}`);
  out.push(r.matches ? 'status      configured as QubesDB says' : 'status      DOES NOT MATCH QubesDB');
  return out.join('\n') + '\n';
}
