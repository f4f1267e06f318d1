// IPv6 virtual DNS fallback figures (issue 14), JSON lines, each next to a baseline measured in
// the same run and lab (sys-net → sys-firewall → c1 with IPv6, c4 without):
//  - IPv4-only DNS upstream, IPv6 on: a query to the IPv6 virtual server ends with ICMPv6 port
//    unreachable; its latency (measured inside the client by qn-dns-query) against a query that
//    is answered on the same path (10.139.1.1);
//  - `getent hosts` from c1 (IPv6 on) against c4 (IPv6 off), with IPv4-only upstream DNS (the
//    maintainer's condition: no extra delay), and with IPv6-only upstream DNS (c1's resolver
//    passes two rejecting IPv4 servers first) against the dual-stack upstream.
import { createLogger } from '@qubes-net/common';
import { INTERNET, dnsQuery } from '@qubes-net/netns';
import { Lab, parseTopology, setUpstreamDns, upAll } from '@qubes-net/lab';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const N = 15;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number) => Math.round(x * 100) / 100;
function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'dns-fallback', ...o }) + '\n');
}

async function queryMs(lab: Lab, q: string, server: string, want: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const r = await dnsQuery(lab.runningQube(q).ns, server, 'www.example.test', 'AAAA', { timeoutMs: 5000 });
    if (r.rcode !== want) throw new Error(`${q} → ${server}: ${r.rcode}, want ${want}`);
    out.push(r.ms!);
  }
  return out;
}

async function getentMs(lab: Lab, q: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const r = await lab.exec(q, ['getent', 'hosts', 'www.example.test'], { timeoutMs: 20_000 });
    if (r.exitCode !== 0) throw new Error(`getent in ${q} failed: ${r.stderr}`);
    out.push(performance.now() - t0);
  }
  return out;
}

if (process.getuid?.() !== 0) {
  process.stderr.write('dns-fallback bench: needs root (namespaces), skipped\n');
  process.exit(0);
}
const [D4A, D4B] = INTERNET.dns4;
const [D6A, D6B] = INTERNET.dns6;
const model = parseTopology(`
internet: { dns: ["${D4A}", "${D6A}", "${D4B}", "${D6B}"] }
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: c1, qid: 7, netvm: sys-firewall }
  - { name: c4, qid: 9, netvm: sys-firewall, features: { ipv6: "" } }
`);
model.name = `b${randomBytes(3).toString('hex')}`;
const stateDir = await mkdtemp(join(tmpdir(), 'qnet-bench-dns-'));
const lab = await Lab.create(model, { stateDir, logger: createLogger('bench-dns', 'warn') });
try {
  await upAll(lab);
  const dualC1 = median(await getentMs(lab, 'c1'));
  await setUpstreamDns(lab, [D4A]);
  const reject = median(await queryMs(lab, 'c1', 'fd09:24ef:4179::a8b:1', 'REJECTED'));
  const answered = median(await queryMs(lab, 'c1', '10.139.1.1', 'NOERROR'));
  emit({ figure: 'ipv6 virtual DNS, IPv4-only upstream: ICMPv6 reject (median ms, inside the client)', value: round(reject), baseline: 'answered query on the same path (10.139.1.1)', baselineValue: round(answered), ratio: round(reject / answered) });
  const v4c1 = median(await getentMs(lab, 'c1'));
  const v4c4 = median(await getentMs(lab, 'c4'));
  emit({ figure: 'getent hosts, IPv4-only upstream: client with IPv6 (median ms, incl. nsenter)', value: round(v4c1), baseline: 'client with IPv6 off', baselineValue: round(v4c4), ratio: round(v4c1 / v4c4) });
  await setUpstreamDns(lab, [D6A]);
  const v6c1 = median(await getentMs(lab, 'c1'));
  emit({ figure: 'getent hosts, IPv6-only upstream: client with IPv6 (two IPv4 servers reject first; median ms)', value: round(v6c1), baseline: 'same client, dual-stack upstream', baselineValue: round(dualC1), ratio: round(v6c1 / dualC1) });
} finally {
  await lab.destroy();
  await rm(stateDir, { recursive: true, force: true });
}
