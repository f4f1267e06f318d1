// Firewall figures, each next to a baseline measured in the same run and namespaces:
// - first-packet latency (TCP connect time: the SYN is the one packet per connection that goes
//   through the per-qube dispatch) and new-connection rate from a client qube through a netvm
//   to a server, with 1 and with 1,000 qubes' chains loaded: our verdict-map dispatch, and
//   upstream's dispatch (one `ip saddr X jump qbs-X` rule per qube, the client's rule last, as
//   for the most recently started qube) built in the same netvm;
// - time to apply one qube's rules (one transaction) with 0 and with 1,000 other qubes present,
//   through libnftables in-process (what the daemon uses) and through a spawned `nft -f`;
// - time to load 1,000 qubes in one transaction.
// Scenarios alternate round by round so that machine noise hits all of them alike.
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { NftTransaction, createNftWriter } from '@qubes-net/common/kernel';
import {
  firewallSkeleton, addForwardRules, compileQube, parseQubeEntries, qubeUpdateScript, addQubeUpdate, addFirewallSkeleton, ruleText, qubeChainName,
  type CompiledQube, type Target,
} from '@qubes-net/firewall';

const SELF = fileURLToPath(import.meta.url);
const ROUNDS = Number(process.env.FW_BENCH_ROUNDS ?? 5);
const CONNS = Number(process.env.FW_BENCH_CONNS ?? 1000);
const OTHERS = 999;
const CLIENT = '10.137.0.7';
const SERVER = '203.0.113.80';
const PORT = 1234;

const RULES = { policy: 'drop', '0000': 'action=accept proto=icmp', '0001': 'action=accept specialtarget=dns', '0002': 'action=drop proto=tcp dstports=4321-4321', '0003': 'action=accept proto=tcp dstports=1000-2000' };

const round2 = (v: number): number => Math.round(v * 100) / 100;
function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

function report(figure: string, unit: string, ours: { name: string; values: number[] }, baseline: { name: string; values: number[] }, target: string, met: boolean | undefined, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({
    bench: 'firewall',
    figure,
    unit,
    name: ours.name,
    value: round2(pct(ours.values, 50)),
    p95: round2(pct(ours.values, 95)),
    n: ours.values.length,
    baseline: { name: baseline.name, value: round2(pct(baseline.values, 50)), p95: round2(pct(baseline.values, 95)), n: baseline.values.length },
    target,
    ...(met === undefined ? {} : { met }),
    ...extra,
  }) + '\n');
}

function qube(addr: string): CompiledQube {
  const target: Target = { addr, family: 4 };
  const m = new Map(Object.entries(RULES).map(([k, v]) => [`/qubes-firewall/${addr}/${k}`, v]));
  return compileQube(parseQubeEntries(target, m), new Map());
}

const otherAddr = (i: number) => `10.137.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`;

/** Our layout: the skeleton and forward's rules, plus each qube's chain and dispatch element. */
function oursScript(others: number): string {
  let s = 'add table ip qubes-firewall\ndelete table ip qubes-firewall\n' + firewallSkeleton() + addForwardRules(new NftTransaction(), 4).render();
  for (let i = 0; i < others; i++) s += qubeUpdateScript(qube(otherAddr(i)));
  return s + qubeUpdateScript(qube(CLIENT));
}

/** Upstream's layout: forward jumps to qubes-forward, one saddr → jump rule per qube. */
function upstreamScript(others: number): string {
  const t = 'ip qubes-firewall';
  const lines = [
    `add table ${t}`, `delete table ${t}`, `add table ${t}`,
    `add chain ${t} forward { type filter hook forward priority filter + 10; policy drop; }`,
    `add rule ${t} forward ct state established,related accept`,
    `add rule ${t} forward iifname != "vif*" accept`,
    `add chain ${t} qubes-forward`,
    `add rule ${t} forward jump qubes-forward`,
    `add set ${t} dns-addr { type ipv4_addr; }`,
    // Upstream has these two as well (with anti-spoofing rules the driver does elsewhere here).
    `add chain ${t} prerouting { type filter hook prerouting priority raw + 10; policy accept; }`,
    `add chain ${t} postrouting { type filter hook postrouting priority raw + 10; policy accept; }`,
  ];
  const addrs = [...Array.from({ length: others }, (_, i) => otherAddr(i)), CLIENT];
  for (const a of addrs) {
    const q = qube(a);
    lines.push(`add chain ${t} ${q.chain}`);
    for (const r of q.rules) lines.push(`add rule ${t} ${q.chain} ${ruleText(4, r)}`);
    lines.push(`add rule ${t} qubes-forward ip saddr ${a} jump ${qubeChainName(a)}`);
  }
  return lines.join('\n') + '\n';
}

/** Runs in the client qube: sequential connects (latency) then a parallel burst (rate). */
const PROBE = `
const net = require('net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const lat = [];
function seq(i, done) {
  if (i >= n) return done();
  const t0 = process.hrtime.bigint();
  const c = net.connect({ host, port });
  c.on('connect', () => { lat.push(Number(process.hrtime.bigint() - t0) / 1000); c.resetAndDestroy(); seq(i + 1, done); });
  c.on('error', (e) => { console.error(e.message); process.exit(1); });
}
function burst(done) {
  let started = 0, finished = 0, worst = 0; const t0 = process.hrtime.bigint();
  const next = () => {
    if (started >= n) return;
    started++;
    const t1 = process.hrtime.bigint();
    const c = net.connect({ host, port });
    c.on('connect', () => { worst = Math.max(worst, Number(process.hrtime.bigint() - t1) / 1e6); c.resetAndDestroy(); finished++; if (finished === n) done(Number(process.hrtime.bigint() - t0) / 1e9, worst); else next(); });
    c.on('error', (e) => { console.error(e.message); process.exit(1); });
  };
  for (let k = 0; k < 32; k++) next();
}
seq(0, () => burst((secs, worst) => { lat.sort((a, b) => a - b); console.log(JSON.stringify({ p50: lat[Math.floor(lat.length / 2)], rate: n / secs, worstMs: worst })); }));
`;

interface Probe {
  p50: number;
  rate: number;
}

async function probe(client: Qube): Promise<Probe> {
  const r = await client.exec(process.execPath, ['-e', PROBE, SERVER, String(PORT), String(CONNS)], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout) as Probe;
}

async function nftIn(q: Qube, script: string): Promise<void> {
  await q.exec('nft', ['-f', '-'], { input: script, timeoutMs: 120_000 });
}

/** Child mode, run inside the netvm: apply times measured in that namespace. */
async function applyChild(): Promise<void> {
  const lib = createNftWriter();
  const bin = createNftWriter({ noLibrary: true });
  const one = () => addQubeUpdate(new NftTransaction(), qube(CLIENT));
  const time = async (apply: (tx: NftTransaction) => Promise<{ ok: boolean }>, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await apply(one());
      if (!r.ok) throw new Error('apply failed');
      out.push(performance.now() - t0);
    }
    return out;
  };
  const viaLib = (tx: NftTransaction) => lib.apply(tx);
  const viaBin = (tx: NftTransaction) => bin.apply(tx);
  await lib.apply(addFirewallSkeleton(new NftTransaction().destroyTable({ family: 'ip', name: 'qubes-firewall' })));
  const lib0 = await time(viaLib, 40);
  const bin0 = await time(viaBin, 15);
  const big = new NftTransaction();
  for (let i = 0; i < OTHERS + 1; i++) addQubeUpdate(big, qube(otherAddr(i)));
  const t0 = performance.now();
  await lib.apply(big);
  const load = performance.now() - t0;
  const lib1000 = await time(viaLib, 40);
  const bin1000 = await time(viaBin, 15);
  process.stdout.write(JSON.stringify({ lib0, bin0, lib1000, bin1000, load }) + '\n');
}

async function main(): Promise<void> {
  const session = await NetnsSession.create('fwbench');
  try {
    const [client, netvm, server] = await Promise.all(['client', 'netvm', 'server'].map((n) => session.qube(n))) as [Qube, Qube, Qube];
    await session.link(netvm, 'vif7.0', client, 'eth0');
    await session.link(netvm, 'eth0', server, 'eth0');
    const batch = (q: Qube, lines: string[]) => q.exec('ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
    await batch(server, ['link set lo up', 'addr add 192.0.2.1/24 dev eth0', `addr add ${SERVER}/32 dev lo`, 'route add 10.137.0.0/16 via 192.0.2.2']);
    await batch(netvm, ['link set lo up', 'addr add 192.0.2.2/24 dev eth0', 'route add default via 192.0.2.1', 'addr add 10.138.0.1/32 dev vif7.0', `route add ${CLIENT} dev vif7.0`]);
    await batch(client, ['link set lo up', `addr add ${CLIENT}/32 dev eth0`, 'route add 10.138.0.1 dev eth0', 'route add default via 10.138.0.1 dev eth0']);
    await netvm.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    // Tens of thousands of short connections (closed with RST, so no TIME_WAIT piles up).
    await client.exec('sysctl', ['-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
    const services = server.spawn('qn-services', ['--addr', SERVER, '--http-port', '8080', '--echo-port', String(PORT)]);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      services.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('"listening"')) resolve(); });
      services.once('exit', (c) => reject(new Error(`qn-services exited ${c}`)));
    });

    const scenarios = {
      'vmap-1': oursScript(0),
      'vmap-1000': oursScript(OTHERS),
      'upstream-1': upstreamScript(0),
      'upstream-1000': upstreamScript(OTHERS),
    } as const;
    const lat: Record<string, number[]> = {};
    const rate: Record<string, number[]> = {};
    for (const name of Object.keys(scenarios)) { lat[name] = []; rate[name] = []; }
    // One warm-up pass, then the measured rounds.
    await nftIn(netvm, scenarios['vmap-1']);
    await probe(client);
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, script] of Object.entries(scenarios)) {
        await nftIn(netvm, script);
        const p = await probe(client);
        if (process.env.FW_BENCH_DEBUG) process.stderr.write(`${name} ${JSON.stringify(p)}\n`);
        lat[name]!.push(p.p50);
        rate[name]!.push(p.rate);
      }
    }
    const ratio = (a: string, b: string) => round2(pct(lat[a]!, 50) / pct(lat[b]!, 50));
    report('first-packet latency, 1,000 qubes (verdict map)', 'us', { name: 'vmap-1000', values: lat['vmap-1000']! }, { name: 'vmap-1', values: lat['vmap-1']! },
      'within 10% of the 1-qube figure', ratio('vmap-1000', 'vmap-1') <= 1.1, { ratio: ratio('vmap-1000', 'vmap-1') });
    report('first-packet latency, 1,000 qubes (upstream linear dispatch)', 'us', { name: 'upstream-1000', values: lat['upstream-1000']! }, { name: 'upstream-1', values: lat['upstream-1']! },
      'baseline to beat', undefined, { ratio: ratio('upstream-1000', 'upstream-1') });
    report('first-packet latency, 1,000 qubes: ours vs upstream', 'us', { name: 'vmap-1000', values: lat['vmap-1000']! }, { name: 'upstream-1000', values: lat['upstream-1000']! },
      'lower than upstream', pct(lat['vmap-1000']!, 50) < pct(lat['upstream-1000']!, 50));
    report('new-connection rate, 1,000 qubes (verdict map)', 'conn/s', { name: 'vmap-1000', values: rate['vmap-1000']! }, { name: 'vmap-1', values: rate['vmap-1']! }, 'informational', undefined);
    report('new-connection rate, 1,000 qubes: ours vs upstream', 'conn/s', { name: 'vmap-1000', values: rate['vmap-1000']! }, { name: 'upstream-1000', values: rate['upstream-1000']! }, 'informational', undefined);
    report('new-connection rate, 1 qube: ours vs upstream', 'conn/s', { name: 'vmap-1', values: rate['vmap-1']! }, { name: 'upstream-1', values: rate['upstream-1']! }, 'informational', undefined);

    await netvm.exec('nft', ['flush', 'ruleset']);
    const child = await netvm.exec(process.execPath, [SELF, '--apply-child'], { timeoutMs: 300_000 });
    const a = JSON.parse(child.stdout) as { lib0: number[]; bin0: number[]; lib1000: number[]; bin1000: number[]; load: number };
    report('apply one qube, 1,000 others present (libnftables, as the daemon does)', 'ms', { name: 'lib-1000', values: a.lib1000 }, { name: 'lib-0', values: a.lib0 }, 'under 20 ms', pct(a.lib1000, 50) < 20);
    report('apply one qube, 1,000 others present (spawned nft -f)', 'ms', { name: 'nft-1000', values: a.bin1000 }, { name: 'nft-0', values: a.bin0 }, 'informational', undefined);
    report('load 1,000 qubes in one transaction', 'ms', { name: 'load-1000', values: [a.load] }, { name: 'apply-one-0', values: a.lib0 }, 'informational', undefined);
    services.kill('SIGTERM');
  } finally {
    await session.destroy();
  }
}

if (process.argv.includes('--apply-child')) await applyChild();
else await main();
