// Connectivity checks run inside the qubes (the demo's and the e2e suite's): DNS, ping and
// HTTP by name through each client's chain, IPv6 where enabled, a per-qube firewall effect,
// inter-qube isolation and an anti-spoofing attempt. Each check knows what it expects from
// the model (expectations.ts), so a "blocked" result can be a pass.
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { INTERNET, dnsQuery, httpGet, ping, type Qube } from '@qubes-net/netns';
import { realIPv4, realIPv6, visibleIPv4 } from './dom0/addresses.js';
import { VIRTUAL_DNS } from './dom0/addresses.js';
import { chainVerdict, uplinkOf, type Probe } from './expectations.js';
import type { Lab } from './runtime/lab.js';

export interface CheckResult {
  qube: string;
  check: string;
  /** What the model says should happen. */
  expect: 'pass' | 'blocked';
  /** What happened. */
  got: 'pass' | 'blocked';
  ok: boolean;
  detail: string;
}

const UDP_PROBE = join(dirname(fileURLToPath(import.meta.url)), 'tools', 'udp-probe.js');

function resolver(lab: Lab): (host: string) => readonly string[] {
  const hosts = lab.internet.net.hostEntries();
  return (host) => hosts.find((h) => h.name === host)?.addresses ?? [];
}

function result(qube: string, check: string, expect: boolean, got: boolean, detail: string): CheckResult {
  return { qube, check, expect: expect ? 'pass' : 'blocked', got: got ? 'pass' : 'blocked', ok: expect === got, detail };
}

function allowed(lab: Lab, qube: string, p: Probe): { ok: boolean; why: string } {
  const v = chainVerdict(lab.model, qube, p, resolver(lab));
  return { ok: v.verdict === 'accept', why: v.decidedBy ? `firewall of ${v.decidedBy}` : '' };
}

/** The qube's path to the internet is complete: every qube in its chain runs with a vif. */
function online(lab: Lab, qube: string): boolean {
  if (!uplinkOf(lab.model, qube)) return false;
  for (let n: string | null = qube; n !== null; n = lab.spec(n).netvm) {
    if (!lab.isRunning(n)) return false;
    if (lab.spec(n).netvm !== null && !lab.running.get(n)!.vif) return false;
  }
  return true;
}

/** IPv6 reaches the internet only when every qube on the way has an IPv6 address. */
function ipv6Path(lab: Lab, qube: string): boolean {
  for (let n: string | null = qube; n !== null; n = lab.spec(n).netvm) {
    if (lab.spec(n).netvm !== null && !realIPv6(lab.model, n)) return false;
  }
  return true;
}

export async function checkDns(lab: Lab, qube: string, name = 'www.example.test'): Promise<CheckResult> {
  const ns = lab.runningQube(qube).ns;
  const exp = online(lab, qube) && allowed(lab, qube, { proto: 'udp', dst: VIRTUAL_DNS[0], port: 53, dns: true }).ok;
  const r = await dnsQuery(ns, VIRTUAL_DNS[0], name, 'A', { timeoutMs: exp ? 3000 : 1500 });
  const got = r.rcode === 'NOERROR' && r.addresses.length > 0;
  return result(qube, `DNS ${name} via ${VIRTUAL_DNS[0]}`, exp, got, got ? `→ ${r.addresses.join(' ')}` : `rcode ${r.rcode}`);
}

export async function checkPing(lab: Lab, qube: string, dst: string): Promise<CheckResult> {
  const ns = lab.runningQube(qube).ns;
  const v6 = dst.includes(':');
  const a = allowed(lab, qube, { proto: 'icmp', dst, icmpType: v6 ? 128 : 8 });
  const exp = online(lab, qube) && a.ok && (!v6 || ipv6Path(lab, qube));
  const got = await ping(ns, dst, { count: 1, timeoutMs: exp ? 2000 : 1000 });
  return result(qube, `ping ${dst}`, exp, got, got ? 'reply' : `no reply${!a.ok ? ` (${a.why})` : ''}`);
}

export async function checkHttp(lab: Lab, qube: string, url: string): Promise<CheckResult> {
  const ns = lab.runningQube(qube).ns;
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  const byName = !/^[\d.]+$/.test(host) && !host.includes(':');
  const addrs = byName ? resolver(lab)(host).filter((a) => !a.includes(':')) : [host];
  const dnsOk = !byName || allowed(lab, qube, { proto: 'udp', dst: VIRTUAL_DNS[0], port: 53, dns: true }).ok;
  const a = allowed(lab, qube, { proto: 'tcp', dst: addrs[0] ?? host, port: 80 });
  const exp = online(lab, qube) && dnsOk && a.ok && (!host.includes(':') || ipv6Path(lab, qube));
  const r = await httpGet(ns, url, { timeoutMs: exp ? 4000 : 2000 });
  const got = r.status === 200;
  return result(qube, `HTTP ${url}`, exp, got, got ? `200 ${JSON.stringify(r.body.trim().slice(0, 40))}` : `${r.status || r.error || 'failed'}${!a.ok ? ` (${a.why})` : ''}`);
}

/** Another qube's address must not be reachable (no inter-qube traffic). */
export async function checkIsolation(lab: Lab, from: string, to: string): Promise<CheckResult> {
  const ns = lab.runningQube(from).ns;
  const dst = visibleIPv4(lab.model, to)!;
  const got = await ping(ns, dst, { count: 1, timeoutMs: 1000 });
  return result(from, `ping ${to} (${dst})`, false, got, got ? 'reply: inter-qube traffic got through' : 'no reply');
}

/**
 * A packet with a source address the qube does not own (10.137.1.128, upstream test 050) must
 * not leave its netvm. Sent as a DNS query for a unique name straight to the real resolver,
 * whose query log then shows whether it arrived; the same query from the qube's real address
 * must arrive, or the check proves nothing.
 */
export async function checkSpoofing(lab: Lab, qube: string, spoofed = '10.137.1.128'): Promise<CheckResult> {
  const ns = lab.runningQube(qube).ns;
  const server = INTERNET.dns4[0];
  const tag = randomBytes(4).toString('hex');
  const genuineName = `genuine-${tag}.example.test`;
  const spoofName = `spoof-${tag}.example.test`;
  await ns.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_nonlocal_bind=1']);
  try {
    await ns.exec(process.execPath, [UDP_PROBE, '--to', server, '--name', genuineName, '--timeout', '1500']);
    await ns.exec(process.execPath, [UDP_PROBE, '--to', server, '--name', spoofName, '--from', spoofed, '--timeout', '1000']);
  } finally {
    await ns.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_nonlocal_bind=0'], { allowFailure: true });
  }
  const seen = async (name: string) => (await lab.internet.net.queryCount(server, name)) > 0;
  const genuine = await seen(genuineName);
  const spoofArrived = await seen(spoofName);
  const detail = `from ${spoofed}: ${spoofArrived ? 'arrived at the resolver' : 'dropped'}; from ${realIPv4(lab.model, qube)}: ${genuine ? 'arrived' : 'did not arrive (control failed)'}`;
  return { qube, check: `spoofed source ${spoofed}`, expect: 'blocked', got: spoofArrived ? 'pass' : 'blocked', ok: !spoofArrived && genuine, detail };
}

/** Every check for one client qube. */
export async function clientChecks(lab: Lab, qube: string, opts: { peers?: string[]; spoof?: boolean } = {}): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  out.push(await checkDns(lab, qube));
  out.push(await checkPing(lab, qube, INTERNET.web4));
  out.push(await checkHttp(lab, qube, 'http://www.example.test/'));
  out.push(await checkHttp(lab, qube, 'http://other.example.test/'));
  if (realIPv6(lab.model, qube)) {
    out.push(await checkPing(lab, qube, INTERNET.web6));
    out.push(await checkHttp(lab, qube, `http://[${INTERNET.web6}]/`));
  } else {
    out.push(await checkPing(lab, qube, INTERNET.web6));
  }
  for (const peer of opts.peers ?? []) out.push(await checkIsolation(lab, qube, peer));
  if (opts.spoof) out.push(await checkSpoofing(lab, qube));
  return out;
}

/**
 * The demo's checks: every running client qube (one with a netvm) in parallel; one peer each
 * for isolation; the spoofing attempt from the first AppVM whose rules allow direct DNS.
 */
export async function runChecks(lab: Lab): Promise<CheckResult[]> {
  const clients = [...lab.running.keys()].filter((n) => lab.spec(n).netvm !== null).sort((a, b) => lab.spec(a).qid - lab.spec(b).qid);
  const leaves = clients.filter((n) => !lab.spec(n).providesNetwork);
  const spoofer = leaves.find((n) => online(lab, n) && allowed(lab, n, { proto: 'udp', dst: INTERNET.dns4[0], port: 53 }).ok);
  const results = await Promise.all(clients.map((q) => {
    const peer = leaves.find((p) => p !== q && realIPv4(lab.model, p));
    return clientChecks(lab, q, { peers: !lab.spec(q).providesNetwork && peer ? [peer] : [], spoof: q === spoofer });
  }));
  return results.flat();
}

export type { Qube };
