// `qubes-net-lab status`: per qube, what dom0 assigned (IPs, gateway, DNS), what the agents
// report (uplink, vif, firewall feedback keys), whether DNS resolves from inside, and whether
// the agents are alive, with where their logs are. A table for people, --json for scripts.
import { INTERNET, dnsQuery } from '@qubes-net/netns';
import { dnsOf, realIPv4, realIPv6, visibleGateway, visibleGateway6 } from './dom0/addresses.js';
import { vmType } from './dom0/entries.js';
import { describeRule } from './dom0/firewall-rules.js';
import { parseFeedback } from './runtime/qdb-ops.js';
import type { Lab } from './runtime/lab.js';

export interface AgentStatus {
  role: string;
  pid: number;
  running: boolean;
  exit?: string;
  /** Restarts after exiting on its own (within the last minute's limit window). */
  restarts: number;
  log: string;
}

export interface QubeStatus {
  name: string;
  class: string;
  vmType: string;
  state: 'running' | 'halted';
  domid?: number;
  netvm: string | null;
  ip?: string;
  ip6?: string;
  gateway?: string;
  gateway6?: string;
  dns: string[];
  /** DNS answered from inside the qube (undefined: not probed). */
  dnsOk?: boolean;
  vif?: { name: string; provider: string; state?: string };
  /** The guest agent's /qubes-uplink-status. */
  uplink?: string;
  firewall: { rules: string[]; applied: Record<string, string | null> };
  /** Providers: the driver's /qubes-dns-upstream. */
  dnsUpstream?: string;
  agents: AgentStatus[];
  logDir?: string;
}

export interface LabStatus {
  lab: string;
  session: string;
  stateDir: string;
  internet: string;
  qubes: QubeStatus[];
}

async function probeDns(lab: Lab, name: string): Promise<boolean> {
  const rq = lab.runningQube(name);
  const server = lab.spec(name).netvm !== null ? '10.139.1.1' : lab.internet.dnsServers[0] ?? INTERNET.dns4[0];
  try {
    const r = await dnsQuery(rq.ns, server, 'www.example.test', 'A', { timeoutMs: 1500 });
    return r.rcode === 'NOERROR' && r.addresses.length > 0;
  } catch {
    return false;
  }
}

export async function collectStatus(lab: Lab, opts: { probe?: boolean } = {}): Promise<LabStatus> {
  const m = lab.model;
  const qubes = [...m.qubes.values()].sort((a, b) => a.qid - b.qid);
  const out = await Promise.all(qubes.map(async (q): Promise<QubeStatus> => {
    const rq = lab.running.get(q.name);
    const s: QubeStatus = {
      name: q.name,
      class: q.klass,
      vmType: vmType(q),
      state: rq ? 'running' : 'halted',
      netvm: q.netvm,
      dns: [...(q.netvm !== null ? dnsOf(m, q.name) ?? [] : q.uplink ? lab.internet.dnsServers : [])],
      firewall: { rules: q.firewall.map(describeRule), applied: {} },
      agents: [],
    };
    const ip = realIPv4(m, q.name), ip6 = realIPv6(m, q.name), gw = visibleGateway(m, q.name), gw6 = visibleGateway6(m, q.name);
    if (ip) s.ip = ip;
    if (ip6) s.ip6 = ip6;
    if (gw) s.gateway = gw;
    if (gw6) s.gateway6 = gw6;
    if (!rq) return s;
    s.domid = rq.domid;
    s.logDir = rq.logDir;
    s.agents = [['qubesdb', rq.qdbDaemon] as const, ...rq.agents].map(([role, p]) => ({
      role,
      pid: p.pid,
      running: p.running,
      ...(p.exit ? { exit: p.exit.signal ?? `code ${p.exit.code}` } : {}),
      restarts: role === 'qubesdb' ? 0 : rq.restarts.get(role as 'guest')?.length ?? 0,
      log: p.logFile,
    }));
    const read = (db: typeof rq.db, key: string) => db.read(key).catch(() => undefined);
    if (rq.agents.has('guest')) s.uplink = (await read(rq.db, '/qubes-uplink-status')) ?? undefined;
    if (q.providesNetwork) s.dnsUpstream = (await read(rq.db, '/qubes-dns-upstream')) ?? undefined;
    if (rq.vif) {
      const rp = lab.running.get(rq.vif.provider);
      s.vif = { name: rq.vif.name, provider: rq.vif.provider };
      if (rp) {
        const st = await read(rp.db, `/qubes-vif/${rq.vif.name}/state`);
        if (st !== undefined) s.vif.state = st;
        for (const a of rq.vif.addresses) s.firewall.applied[a] = (await read(rp.db, `/qubes-firewall-applied/${a}`)) ?? null;
      }
    }
    if (opts.probe && (rq.vif || q.uplink)) s.dnsOk = await probeDns(lab, q.name);
    return s;
  }));
  return { lab: m.name, session: lab.session.id, stateDir: lab.stateDir, internet: lab.internet.describe(), qubes: out };
}

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function feedbackState(value: string | undefined | null): string {
  if (value === undefined || value === null) return '-';
  return parseFeedback(value)?.state ?? '?';
}

/** The status as a table (one row per qube) followed by the log locations. */
export function formatStatus(st: LabStatus): string {
  const rows = [['QUBE', 'STATE', 'DOMID', 'NETVM', 'IPv4', 'IPv6', 'GATEWAY', 'DNS', 'UPLINK', 'VIF', 'FIREWALL', 'AGENTS']];
  for (const q of st.qubes) {
    const fw = Object.values(q.firewall.applied);
    const fwText = q.state !== 'running' || !q.vif ? '-' : fw.length ? [...new Set(fw.map(feedbackState))].join('/') + ` (${q.firewall.rules.length} rule${q.firewall.rules.length === 1 ? '' : 's'})` : '-';
    rows.push([
      q.name,
      q.state,
      q.domid !== undefined ? String(q.domid) : '-',
      q.netvm ?? '-',
      q.ip ?? '-',
      q.ip6 ?? '-',
      [q.gateway, q.gateway6].filter(Boolean).join(' ') || '-',
      q.dnsOk === undefined ? (q.state === 'running' && (q.vif || q.dns.length) ? '?' : '-') : q.dnsOk ? 'ok' : 'FAIL',
      q.state === 'running' ? feedbackState(q.uplink) : '-',
      q.vif ? `${q.vif.name}@${q.vif.provider} ${q.vif.state ?? '?'}` : '-',
      fwText,
      q.agents.length ? q.agents.map((a) => `${a.role}${a.running ? '' : `✗(${a.exit})`}${a.restarts ? `(restarted ${a.restarts}×)` : ''}`).join(' ') : '-',
    ]);
  }
  const logs = st.qubes.filter((q) => q.logDir).map((q) => `  ${q.name}: ${q.logDir}/{${q.agents.map((a) => a.role).join(',')}}.log`);
  const dead = st.qubes.flatMap((q) => q.agents.filter((a) => !a.running).map((a) => `  ${q.name}: ${a.role} exited (${a.exit}); see ${a.log}`));
  return [
    `lab ${st.lab} (session ${st.session}); fake internet: ${st.internet}`,
    pad(rows).trimEnd(),
    ...(dead.length ? ['agents not running:', ...dead] : []),
    'logs:',
    ...logs,
  ].join('\n') + '\n';
}
