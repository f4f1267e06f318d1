// The kernel writers on their own, inside a throwaway qube: the ip batch writer's failure
// attribution (including iproute2 commands that abort the whole batch), the base ruleset
// loaded twice, and the flowtable probe's fallback on this kernel.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsSession, type Qube } from '@qubes-net/netns';
import { nftListJson } from '@qubes-net/common';
import { baseRulesetScript, computeDnsMapping, expectedRuleCounts } from '@qubes-net/driver-agent';
import { needRoot, isRoot } from '../helpers/root.js';

const KERNEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'common', 'dist', 'kernel', 'index.js');
const INDEX = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'driver-agent', 'dist', 'index.js');
let session: NetnsSession;
let q: Qube;

before(async () => {
  if (!isRoot()) return;
  session = await NetnsSession.create('drv-kernel');
  q = await session.qube('netvm');
  await q.exec('ip', ['link', 'add', 'vif5.0', 'type', 'veth', 'peer', 'name', 'peer5']);
  await q.exec('ip', ['link', 'add', 'vif6.0', 'type', 'veth', 'peer', 'name', 'peer6']);
});

after(async () => {
  await session?.destroy();
});

/** Runs `code` (an async function body with `m` = the driver package) inside the qube; returns its JSON result. */
async function inQube(code: string): Promise<any> {
  const src = `const m = await import(${JSON.stringify(INDEX)}); const r = await (async () => { ${code} })(); process.stdout.write(JSON.stringify(r));`;
  const res = await q.exec(process.execPath, ['--input-type=module', '-e', src]);
  return JSON.parse(res.stdout);
}

test('ip batch: failures are attributed per vif, and an aborted batch is resumed after the failing group', async (t) => {
  if (!needRoot(t)) return;
  const failures = await inQube(`return m.applyIpLines([
    { line: 'link set dev vif5.0 group 2 up', vif: 'vif5.0', tolerant: false },
    { line: 'neigh del 10.137.0.99 dev vif5.0', vif: 'vif5.0', tolerant: true },
    { line: 'neigh replace 10.137.0.7 dev vif5.0 lladdr 00:16:3e:5e:6c:00 nud permanent', vif: 'vif5.0', tolerant: false },
    { line: 'route replace 10.137.0.9 dev vif9.0', vif: 'vif9.0', tolerant: false },
    { line: 'link set dev vif6.0 group 2 up', vif: 'vif6.0', tolerant: false },
    { line: 'route replace 10.137.0.6 dev vif6.0 metric 32746', vif: 'vif6.0', tolerant: false },
  ]);`);
  // 'neigh del' of a missing entry makes iproute2 exit: the rest of vif5.0's group is unknown.
  assert.deepEqual(failures.map((f: any) => `${f.vif} ${f.line.split(' ').slice(0, 2).join(' ')}`).sort(), [
    'vif5.0 link set', 'vif5.0 neigh del', 'vif5.0 neigh replace', 'vif9.0 route replace',
  ].sort());
  const r6 = (await q.exec('ip', ['route', 'show', 'dev', 'vif6.0'])).stdout;
  assert.match(r6, /10\.137\.0\.6 scope link metric 32746/, 'the group after the abort was still applied');
  assert.ok(failures.find((f: any) => f.vif === 'vif9.0').message.includes('Cannot find device'));
});

test('base ruleset: loading it twice leaves one copy of every rule, user chains untouched', async (t) => {
  if (!needRoot(t)) return;
  const dns = computeDnsMapping({ virtualDns: ['10.139.1.1', '10.139.1.2'], servers4: ['198.51.100.53'], ownAddresses: new Set(), behindQubesProvider: false }).mapping;
  const script = baseRulesetScript({ ipv6: true, connected4: ['10.137.0.7'], connected6: [], dns });
  await q.exec('nft', ['-f', '-'], { input: script });
  await q.exec('nft', ['add', 'rule', 'ip', 'qubes', 'custom-forward', 'counter', 'comment', '"mine"']);
  await q.exec('nft', ['add', 'element', 'ip', 'qubes', 'allowed', '{ "vif5.0" . 10.137.0.5 }']);
  await q.exec('nft', ['-f', '-'], { input: script });
  const want = expectedRuleCounts(true);
  for (const f of ['ip', 'ip6'] as const) {
    const doc = await nftListJson(['table', f, 'qubes'], { netns: q.netns });
    const counts = new Map<string, number>();
    for (const item of doc!.nftables) if (item.rule) counts.set(item.rule.chain, (counts.get(item.rule.chain) ?? 0) + 1);
    for (const [chain, n] of want[f]) assert.equal(counts.get(chain), n, `${f} ${chain}`);
  }
  assert.match((await q.exec('nft', ['list', 'chain', 'ip', 'qubes', 'custom-forward'])).stdout, /comment "mine"/);
  assert.match((await q.exec('nft', ['list', 'set', 'ip', 'qubes', 'allowed'])).stdout, /"vif5\.0" \. 10\.137\.0\.5/, 'set elements survive a reload');
  // Priorities as documented (nft prints names for the standard ones).
  const listing = (await q.exec('nft', ['list', 'table', 'ip', 'qubes'])).stdout;
  assert.match(listing, /chain prerouting \{\s+type filter hook prerouting priority raw; policy accept;/);
  assert.match(listing, /chain dnat-dns \{\s+type nat hook prerouting priority dstnat; policy accept;/);
  assert.match(listing, /chain input \{\s+type filter hook input priority filter; policy drop;/);
  assert.match(listing, /chain egress-guard \{\s+type filter hook postrouting priority security; policy accept;/);
  assert.match(listing, /chain postrouting \{\s+type nat hook postrouting priority srcnat; policy accept;/);
});

test('flowtables: this kernel has none, the probe says so and the driver leaves the table out', async (t) => {
  if (!needRoot(t)) return;
  const has = await inQube('return m.kernelHasFlowtables ? m.kernelHasFlowtables() : "missing export";');
  assert.equal(has, false);
  const direct = await q.exec('nft', ['-c', '-f', '-'], { input: 'table inet probe {\n flowtable f {\n  hook ingress priority filter\n  devices = { lo }\n }\n}\n', allowFailure: true });
  assert.notEqual(direct.exitCode, 0, 'the kernel really refuses flowtables');
});

test('the loop\'s writer: one transaction per call, a refused one leaves nothing behind', async (t) => {
  if (!needRoot(t)) return;
  const r = await inQube(`
    const w = m.toolWriter;
    const { NftTransaction } = await import(${JSON.stringify(KERNEL)});
    const t = { family: 'ip', name: 'qubes' };
    const out = [];
    await w.nft(new NftTransaction().addElements(t, 'allowed', [['vif6.0', '10.137.0.61']]).addElements(t, 'downstream', ['10.137.0.61']));
    try { await w.nft(new NftTransaction().addElements(t, 'allowed', [['vif6.0', '10.137.0.62']]).addElements(t, 'nosuchset', ['1.2.3.4'])); out.push('no error'); }
    catch (e) { out.push(e.message); }
    await w.nft(new NftTransaction().addElements(t, 'allowed', [['vif6.0', '10.137.0.63']]));
    const ip = await w.ip([
      { line: 'route replace 10.137.0.64 dev vif6.0 metric 100', vif: 'vif6.0', tolerant: false },
      { line: 'route replace 10.137.0.65 dev vif99.0 metric 100', vif: 'vif99.0', tolerant: false },
    ]);
    out.push(ip.map((f) => f.vif).join(' '));
    return out;`);
  assert.match(r[0], /No such file or directory/s);
  assert.equal(r[1], 'vif99.0');
  const allowed = (await q.exec('nft', ['list', 'set', 'ip', 'qubes', 'allowed'])).stdout;
  assert.match(allowed, /10\.137\.0\.61/);
  assert.doesNotMatch(allowed, /10\.137\.0\.62/, 'the refused transaction left nothing behind');
  assert.match(allowed, /10\.137\.0\.63/);
});

test('conntrack purge: deleted by filter, never listed; free when there is nothing', async (t) => {
  if (!needRoot(t)) return;
  const none = await inQube(`return m.purgeConntrack(['10.137.0.70']);`);
  assert.deepEqual(none, { filters: [], errors: [] }, 'no entries in this namespace: no process at all');
  for (const [src, sport] of [['10.137.0.70', '1000'], ['10.137.0.71', '1001']]) {
    await q.exec('conntrack', ['-I', '-s', src!, '-d', '203.0.113.80', '-p', 'tcp', '--sport', sport!, '--dport', '80', '--state', 'ESTABLISHED', '-t', '600', '-u', 'ASSURED']);
  }
  await q.exec('conntrack', ['-I', '-s', '203.0.113.81', '-d', '10.137.0.70', '-p', 'udp', '--sport', '53', '--dport', '5353', '-t', '600']);
  const r = await inQube(`return m.purgeConntrack(['10.137.0.70', 'fd09::70']);`);
  assert.deepEqual(r.errors, []);
  assert.ok(r.filters.includes('-s 10.137.0.70') && r.filters.includes('-d 10.137.0.70'));
  const left = (await q.exec('conntrack', ['-L'], { allowFailure: true })).stdout;
  assert.doesNotMatch(left, /10\.137\.0\.70/, 'both directions purged');
  assert.match(left, /src=10\.137\.0\.71/, 'another address untouched');
});

test('conntrack purge of DNS flows: the flows to a virtual DNS address go, others stay', async (t) => {
  if (!needRoot(t)) return;
  await q.exec('conntrack', ['-I', '-s', '10.137.0.72', '-d', '10.139.1.1', '-p', 'udp', '--sport', '4000', '--dport', '53', '-t', '600']);
  await q.exec('conntrack', ['-I', '-s', '10.137.0.72', '-d', '203.0.113.82', '-p', 'udp', '--sport', '4001', '--dport', '53', '-t', '600']);
  const r = await inQube(`return m.purgeDnsFlows(['10.139.1.1', '10.139.1.2']);`);
  assert.deepEqual(r.errors, []);
  const left = (await q.exec('conntrack', ['-L'], { allowFailure: true })).stdout;
  assert.doesNotMatch(left, /dst=10\.139\.1\.1 /, 'the DNATed query flow is gone');
  assert.match(left, /dst=203\.0\.113\.82/, 'other flows untouched');
});
