// The engine's logic with an in-memory QubesDB and kernel: what gets applied when, fail-closed
// paths, feedback keys, removal, TTL refresh and DNS changes. Real nft and traffic are tested
// in namespaces (firewall.netns.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { MemoryQubesDB } from '@qubes-net/qubesdb';
import { NftTransaction } from '@qubes-net/common/kernel';
import { FirewallEngine, addFirewallSkeleton, firewallTable, parseConntrackLine, type HostResolution, type DnsServers, type Family } from '@qubes-net/firewall';
import { FirewallFakeKernel as FakeKernel } from './fake-kernel.js';
import { waitFor } from '../helpers/wait.js';

interface Setup {
  db: MemoryQubesDB;
  kernel: FakeKernel;
  engine: FirewallEngine;
  logs: Record<string, unknown>[];
  names: Map<string, HostResolution>;
  lookups: string[];
  dns: { servers: DnsServers };
  /** Names whose next lookup hangs (a query sent while the DNS path was dead); released at the end. */
  hang: Set<string>;
  release: () => void;
}

async function setup(initial: Record<string, string>, opts: { refresh?: { minMs: number; maxMs: number; retryMs: number; firstRetryMs?: number }; writingTimeoutMs?: number; now?: () => number } = {}): Promise<Setup> {
  const db = new MemoryQubesDB(initial);
  const kernel = new FakeKernel();
  assert.deepEqual(await kernel.apply(addFirewallSkeleton(new NftTransaction())), { ok: true });
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, new Writable({ write(chunk, _e, cb) { logs.push(JSON.parse(String(chunk))); cb(); } }));
  const names = new Map<string, HostResolution>();
  const lookups: string[] = [];
  const dns = { servers: { v4: ['10.139.1.1'], v6: [] } as DnsServers };
  const hang = new Set<string>();
  const hung: (() => void)[] = [];
  const engine = new FirewallEngine({
    db,
    log,
    kernel,
    resolve: async (host: string, family: Family) => {
      lookups.push(`${family} ${host}`);
      if (hang.delete(`${family} ${host}`)) await new Promise<void>((r) => hung.push(r));
      return names.get(`${family} ${host}`) ?? { ok: false, error: 'no such name' };
    },
    readDnsServers: async () => dns.servers,
    ...(opts.refresh ? { refresh: opts.refresh } : {}),
    ...(opts.writingTimeoutMs !== undefined ? { writingTimeoutMs: opts.writingTimeoutMs } : {}),
    ...(opts.now ? { now: opts.now } : {}),
  });
  return { db, kernel, engine, logs, names, lookups, dns, hang, release: () => hung.splice(0).forEach((r) => r()) };
}

function qube(ip: string, rules: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { [`/qubes-firewall/${ip}`]: '' };
  for (const [k, v] of Object.entries(rules)) out[`/qubes-firewall/${ip}/${k}`] = v;
  return out;
}

/**
 * dom0's write sequence: rm the directory, write the rules, write the marker last. With
 * `loseMarker`, the marker's watch event never arrives (the watch connection dropped).
 */
async function dom0Write(s: Setup, ip: string, rules: Record<string, string>, opts: { loseMarker?: boolean } = {}): Promise<void> {
  await s.db.rm(`/qubes-firewall/${ip}/`);
  s.engine.onWatchEvent(`/qubes-firewall/${ip}/`);
  for (const [k, v] of Object.entries(rules)) {
    await s.db.write(`/qubes-firewall/${ip}/${k}`, v);
    s.engine.onWatchEvent(`/qubes-firewall/${ip}/${k}`);
  }
  await s.db.write(`/qubes-firewall/${ip}`, '');
  if (!opts.loseMarker) s.engine.onWatchEvent(`/qubes-firewall/${ip}`);
  await s.engine.idle();
}

test('initial load: every qube applied, bad ones blocked, others untouched, feedback written', async () => {
  const s = await setup({
    ...qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=icmp' }),
    ...qube('10.137.0.8', { policy: 'accept', '0000': 'action=accept bogus' }),
    ...qube('fd09:24ef:4179::a89:7', { policy: 'drop', '0000': 'action=accept proto=tcp dstports=443-443' }),
    ...qube('10.137.0.0999', { policy: 'accept' }),
    '/qubes-firewall-handled/10.137.0.7': '41',
  });
  await s.engine.start();
  const k = s.kernel;
  assert.deepEqual(k.chain(4, 'qbs-10-137-0-7'), ['meta l4proto icmp accept comment "0000"', 'reject with icmp type admin-prohibited comment "policy"']);
  assert.deepEqual(k.chain(4, 'qbs-10-137-0-8'), ['reject with icmp type admin-prohibited comment "blocked"']);
  assert.equal(k.dispatch(6).get('fd09:24ef:4179::a89:7'), 'qbs-fd09-24ef-4179--a89-7');
  assert.equal(k.dispatch(4).size, 2, 'the invalid address gets no element: forward policy drop');
  assert.deepEqual(k.dnsAddr(4), ['10.139.1.1']);
  // One transaction carried all three qubes.
  assert.equal(k.applied.filter((x) => x.includes('add chain ip qubes-firewall qbs-')).length, 1);
  // The counter continues from dom0's view; the outcome key is written last.
  assert.equal(await s.db.read('/qubes-firewall-handled/10.137.0.7'), '42');
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.7'), '42 ok 2 rules');
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.8'))!, /^1 blocked invalid rules: 0000: token-without-equals \(bogus\)$/);
  assert.equal(await s.db.read('/qubes-firewall-applied/fd09:24ef:4179::a89:7'), '1 ok 2 rules');
  assert.ok(s.logs.some((l) => l.msg === 'invalid firewall target address ignored' && l.value === '10.137.0.0999'));
  assert.ok(s.logs.some((l) => l.msg === 'invalid rules: blocking the qube' && l.ip === '10.137.0.8'));
  await s.engine.stop();
});

test('dom0 rewrites one qube: only that qube\'s transaction, generation increments, rule writes alone do nothing', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'drop' }), ...qube('10.137.0.9', { policy: 'accept' }) });
  await s.engine.start();
  const before = s.kernel.applied.length;
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/0000');
  await s.engine.idle();
  assert.equal(s.kernel.applied.length, before, 'no apply until the marker');
  await dom0Write(s, '10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=udp' });
  const applied = s.kernel.applied.slice(before);
  assert.equal(applied.length, 1);
  assert.doesNotMatch(applied[0]!, /10-137-0-9|10\.137\.0\.9/);
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-7')![0], 'meta l4proto udp accept comment "0000"');
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.7'), '2 ok 2 rules');
  assert.equal(await s.db.read('/qubes-firewall-handled/10.137.0.7'), '2');
  await s.engine.stop();
});

test('removed entries remove the chain, the element and the feedback; also stale ones found at start', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'accept' }), ...qube('10.137.0.8', { policy: 'accept' }) });
  // Left over from an earlier run: a qube no longer in QubesDB, plus a user's chain.
  const t4 = firewallTable(4);
  await s.kernel.apply(new NftTransaction().addChain(t4, 'qbs-10-137-0-50').addElements(t4, 'dispatch', [{ key: '10.137.0.50', value: { jump: 'qbs-10-137-0-50' } }]).addChain(t4, 'user-chain'));
  await s.db.write('/qubes-firewall-applied/10.137.0.50', '3 ok 1 rules');
  await s.engine.start();
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-50'), undefined);
  assert.equal(s.kernel.dispatch(4).has('10.137.0.50'), false);
  assert.deepEqual(s.kernel.chain(4, 'user-chain'), []);
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.50'), undefined);

  await s.db.rm('/qubes-firewall/10.137.0.8/');
  await s.db.rm('/qubes-firewall/10.137.0.8');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.8');
  await s.engine.idle();
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-8'), undefined);
  assert.equal(s.kernel.dispatch(4).has('10.137.0.8'), false);
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.8'), undefined);
  assert.equal(await s.db.read('/qubes-firewall-handled/10.137.0.8'), '1', 'upstream\'s counter stays');
  assert.ok(s.kernel.chain(4, 'qbs-10-137-0-7'));
  // Removing something already gone is fine too.
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.8');
  await s.engine.idle();
  assert.ok(!s.logs.some((l) => l.msg === 'removing rules failed'));
  await s.engine.stop();
});

test('a resync for another cause skips a qube dom0 is rewriting: its current rules stay until the marker', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=icmp' }));
  await s.engine.start();
  await s.db.rm('/qubes-firewall/10.137.0.7/');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/');
  await s.db.write('/qubes-firewall/10.137.0.7/policy', 'accept');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/policy');
  // Our table deleted behind our back: the restore resyncs everything, except this qube.
  await s.kernel.apply(new NftTransaction().deleteTable(firewallTable(6)));
  s.dns.servers = { v4: ['10.139.1.2'], v6: [] };
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  assert.ok(s.kernel.present(6), 'table restored');
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['meta l4proto icmp accept comment "0000"', 'reject with icmp type admin-prohibited comment "policy"'], 'half-written accept policy not applied');
  await s.db.write('/qubes-firewall/10.137.0.7', '');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7');
  await s.engine.idle();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['accept comment "policy"']);
  await s.engine.stop();
});

test('nft rejecting one qube in a batch: the others apply, that one is blocked and says why', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'accept', '0000': 'action=accept proto=udp' }), ...qube('10.137.0.8', { policy: 'accept' }) });
  s.kernel.rejectIf = (script) => (script.includes('meta l4proto udp accept') ? 'Error: Could not process rule: Operation not supported' : undefined);
  await s.engine.start();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-8'), ['accept comment "policy"']);
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['reject with icmp type admin-prohibited comment "blocked"']);
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.7'))!, /^1 blocked nft rejected the rules/);
  // If even the block is rejected, the element goes: the forward policy drops the qube.
  s.kernel.rejectIf = (script) => (script.includes('comment "blocked"') || script.includes('l4proto udp') ? 'Error: Could not process rule: Operation not supported' : undefined);
  await dom0Write(s, '10.137.0.7', { policy: 'accept', '0000': 'action=accept proto=udp' });
  assert.equal(s.kernel.dispatch(4).has('10.137.0.7'), false);
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.7'))!, /^2 blocked .*forward policy drop/);
  await s.engine.stop();
});

test('our table deleted behind our back is restored with every qube', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'drop' }), ...qube('10.137.0.8', { policy: 'accept' }) });
  await s.engine.start();
  assert.deepEqual(await s.kernel.apply(new NftTransaction().deleteTable(firewallTable(4))), { ok: true });
  await dom0Write(s, '10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=icmp' });
  await s.engine.idle();
  // forward's rules are back too, once, in upstream's order.
  assert.deepEqual(s.kernel.chain(4, 'forward'), ['ct state established,related accept', 'iifname != "vif*" accept', 'jump qubes-forward', 'ip saddr vmap @dispatch'].map((r) => `${r} comment "qubes-net"`));
  assert.deepEqual(s.kernel.chain(6, 'forward')?.length, 4);
  assert.equal(s.kernel.dispatch(4).get('10.137.0.8'), 'qbs-10-137-0-8');
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-7')!.length, 2);
  assert.deepEqual(s.kernel.dnsAddr(4), ['10.139.1.1']);
  await s.engine.stop();
});

test('names: one lookup per name for many qubes, partial/blocked outcomes, /dns feedback with the length limit', async () => {
  const long = `${'a'.repeat(40)}.example.test`;
  const s = await setup({
    ...qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test', '0001': 'action=accept dsthost=gone.test', '0002': `action=accept dsthost=${long}` }),
    ...qube('10.137.0.8', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }),
    ...qube('10.137.0.9', { policy: 'accept', '0000': 'action=drop dsthost=gone.test' }),
  });
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 });
  s.names.set(`4 ${long}`, { ok: true, addrs: ['203.0.113.81'], ttlSeconds: 300 });
  await s.engine.start();
  assert.equal(s.lookups.filter((l) => l === '4 web.test').length, 1);
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.7'))!, /^1 partial rule 0001 left out: dsthost gone.test did not resolve \(no such name\)$/);
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.9'))!, /^1 blocked rule 0000: dsthost gone.test did not resolve/);
  // Upstream's format: the Python set text of the resolved networks.
  assert.equal(await s.db.read('/dns/10.137.0.7/web.test'), "{'203.0.113.80/32'}");
  assert.deepEqual(await s.db.list('/dns/10.137.0.7/'), ['/dns/10.137.0.7/web.test']);
  assert.deepEqual(await s.db.list('/dns/10.137.0.9/'), [], 'a blocked qube has no /dns entries');
  assert.ok(s.logs.some((l) => l.msg === 'dns feedback skipped: path too long' && l.ip === '10.137.0.7'));
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7')!.slice(0, 2), ['ip daddr 203.0.113.80 accept comment "0000"', 'ip daddr 203.0.113.81 accept comment "0002"']);
  await s.engine.stop();
});

test('names are re-resolved when their TTL runs out; an unchanged answer costs no transaction', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }), { refresh: { minMs: 30, maxMs: 60_000, retryMs: 30 } });
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 0 });
  await s.engine.start();
  const applied = () => s.kernel.applied.filter((x) => x.includes('add chain ip qubes-firewall qbs-10-137-0-7')).length;
  assert.equal(applied(), 1);
  await waitFor('a second lookup', () => s.lookups.length >= 2);
  await s.engine.idle();
  assert.equal(applied(), 1, 'same answer: nothing applied');
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.99'], ttlSeconds: 3600 });
  await waitFor('the new address applied', () => s.kernel.chain(4, 'qbs-10-137-0-7')?.[0] === 'ip daddr 203.0.113.99 accept comment "0000"');
  await waitFor('feedback', async () => (await s.db.read('/dns/10.137.0.7/web.test')) === "{'203.0.113.99/32'}");
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.7'), '2 ok 2 rules');
  await s.engine.stop();
});

test('13 (dead DNS): a name that did not resolve is retried after 1 s, not the 30 s retry interval; the wake deadline says so', async () => {
  const T = Date.parse('2026-01-01T00:00:00Z');
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }), { now: () => T });
  await s.engine.start();
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.7'))!, /partial rule 0000 left out: dsthost web.test did not resolve/);
  // The network agent's idle exit writes the earliest nextRefreshAt to its wake file.
  assert.equal(s.engine.status().qubes[0]!.nextRefreshAt, new Date(T + 1_000).toISOString());
  // A sync retries at once, and does not push back the retry already due (the sync may have
  // come just before the DNS path did).
  const before = s.lookups.length;
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  await waitFor('the out-of-turn retry', () => s.lookups.length > before);
  assert.equal(s.engine.status().qubes[0]!.nextRefreshAt, new Date(T + 1_000).toISOString());
  await s.engine.stop();
});

test('13 (dead DNS): failed names back off while DNS stays down, and the accept rule comes soon after it answers again', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }), { refresh: { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000, firstRetryMs: 20 } });
  await s.engine.start();
  const tries = () => s.lookups.filter((l) => l === '4 web.test').length;
  await waitFor('three lookups while DNS is down', () => tries() >= 3);
  // The first failure in the queue, the retries outside it (they must not hold other qubes up).
  assert.equal(s.logs.find((l) => l.msg === 'name did not resolve')?.retryInMs, 20);
  await waitFor('two retries logged', () => s.logs.filter((l) => l.msg === 'retried names that did not resolve').length >= 2);
  assert.deepEqual(s.logs.filter((l) => l.msg === 'retried names that did not resolve').slice(0, 2).map((l) => [l.answered, l.retryInMs]), [[false, 40], [false, 80]]);
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 3600 });
  await waitFor('the accept rule applied', () => s.kernel.chain(4, 'qbs-10-137-0-7')?.[0] === 'ip daddr 203.0.113.80 accept comment "0000"', { timeoutMs: 10_000 });
  await waitFor('ok feedback', async () => /^\d+ ok /.test((await s.db.read('/qubes-firewall-applied/10.137.0.7')) ?? ''));
  // Resolved: the next refresh follows the TTL again.
  await s.engine.idle();
  const next = Date.parse(s.engine.status().qubes[0]!.nextRefreshAt!);
  assert.ok(next - Date.now() > 3_000_000, `next refresh after the TTL (${next - Date.now()} ms)`);
  await s.engine.stop();
});

test('13 (dead DNS): a retry hanging on the dead path neither delays the next retry nor holds up other qubes', async () => {
  const s = await setup({
    ...qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }),
    ...qube('10.137.0.8', { policy: 'accept' }),
  }, { refresh: { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000, firstRetryMs: 30 } });
  await s.engine.start();
  s.hang.add('4 web.test'); // the first retry hangs: sent before DNS came back
  await waitFor('the first retry sent', () => s.lookups.length >= 2);
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 3600 });
  await dom0Write(s, '10.137.0.8', { policy: 'drop' });
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.8'))!, /^2 ok /, 'another qube updated while a retry hangs');
  await waitFor('the accept rule applied by the next retry', () => s.kernel.chain(4, 'qbs-10-137-0-7')?.[0] === 'ip daddr 203.0.113.80 accept comment "0000"', { timeoutMs: 10_000 });
  s.release();
  await s.engine.idle();
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-7')?.[0], 'ip daddr 203.0.113.80 accept comment "0000"', 'the late answer changes nothing');
  await s.engine.stop();
});

test('13 (dead DNS): a DNS/uplink sync with unchanged servers retries failed names at once; a drop rule naming one stays fail-closed until then', async () => {
  const s = await setup({
    ...qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept dsthost=web.test' }),
    ...qube('10.137.0.9', { policy: 'accept', '0000': 'action=drop dsthost=bad.test' }),
  }, { refresh: { minMs: 10_000, maxMs: 3_600_000, retryMs: 600_000, firstRetryMs: 600_000 } });
  await s.engine.start();
  assert.match((await s.db.read('/qubes-firewall-applied/10.137.0.9'))!, /^1 blocked /);
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 3600 });
  s.names.set('4 bad.test', { ok: true, addrs: ['203.0.113.66'], ttlSeconds: 3600 });
  const before = s.lookups.length;
  s.engine.dnsMaybeChanged();
  // The retries run outside the queue: wait for their result, not for the queue.
  await waitFor('the accept rule applied', () => s.kernel.chain(4, 'qbs-10-137-0-7')?.[0] === 'ip daddr 203.0.113.80 accept comment "0000"');
  await waitFor('the drop rule applied', async () => /^2 ok /.test((await s.db.read('/qubes-firewall-applied/10.137.0.9')) ?? ''));
  await s.engine.idle();
  assert.equal(s.lookups.length - before, 2, 'only the failed names are looked up');
  // Nothing failing any more: a further sync costs nothing.
  const n = s.kernel.applied.length;
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  assert.equal(s.kernel.applied.length, n);
  assert.equal(s.lookups.length - before, 2);
  await s.engine.stop();
});

test('a rule change cuts the established flows it forbids and keeps the others', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }));
  await s.engine.start();
  const keep = parseConntrackLine(4, 'tcp 6 431999 ESTABLISHED src=10.137.0.7 dst=203.0.113.80 sport=40001 dport=1234 src=203.0.113.80 dst=10.137.0.7 sport=1234 dport=40001 [ASSURED] mark=0 use=1')!;
  const cut = parseConntrackLine(4, 'tcp 6 431999 ESTABLISHED src=10.137.0.7 dst=203.0.113.80 sport=40002 dport=4321 src=203.0.113.80 dst=10.137.0.7 sport=4321 dport=40002 [ASSURED] mark=0 use=1')!;
  s.kernel.connections = [keep, cut];
  await dom0Write(s, '10.137.0.7', { policy: 'accept', '0000': 'action=drop proto=tcp dstports=4000-5000' });
  assert.deepEqual(s.kernel.deleted, [cut]);
  assert.ok(s.logs.some((l) => l.msg === 'connection cut' && l.dport === 4321 && l.ip === '10.137.0.7'));
  await s.engine.stop();
});

test('changed DNS servers: dns-addr replaced, names looked up again, flows to the old servers cut', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept specialtarget=dns', '0001': 'action=accept dsthost=web.test' }));
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 3600 });
  await s.engine.start();
  const dnsFlow = parseConntrackLine(4, 'udp 17 29 src=10.137.0.7 dst=10.139.1.1 sport=5000 dport=53 src=10.139.1.1 dst=10.137.0.7 sport=53 dport=5000 mark=0 use=1')!;
  s.kernel.connections = [dnsFlow];
  s.dns.servers = { v4: ['192.0.2.53'], v6: ['2001:db8::53'] };
  s.names.set('4 web.test', { ok: true, addrs: ['203.0.113.90'], ttlSeconds: 3600 });
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  assert.deepEqual(s.kernel.dnsAddr(4), ['192.0.2.53']);
  assert.deepEqual(s.kernel.dnsAddr(6), ['2001:db8::53']);
  assert.deepEqual(s.kernel.deleted, [dnsFlow]);
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-7')![1], 'ip daddr 203.0.113.90 accept comment "0001"');
  // Unchanged servers: nothing happens.
  const n = s.kernel.applied.length;
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  assert.equal(s.kernel.applied.length, n);
  await s.engine.stop();
});

test('status lists each qube with its outcome and which connected qubes have no rules', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'drop' }), '/connected-ips': '10.137.0.7 10.137.0.20', '/connected-ips6': '' });
  await s.engine.start();
  const st = s.engine.status();
  assert.deepEqual(st.qubes.map((q) => [q.ip, q.outcome, q.generation, q.connected]), [['10.137.0.7', 'ok', 1, true]]);
  assert.deepEqual(st.connectedWithoutRules, ['10.137.0.20']);
  await s.engine.stop();
});

test('a failure in the middle of a round (nft listing fails) leads to a full resync, not to lost updates', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }));
  const real = s.kernel.list.bind(s.kernel);
  // The first two listings are the start's check of forward's rules (one per family).
  let calls = 0;
  s.kernel.list = async (what) => {
    if (++calls === 3) throw new Error('nft: netlink: Device or resource busy');
    return real(what);
  };
  await s.engine.start();
  assert.ok(s.logs.some((l) => l.msg === 'firewall loop failed; full resync in 1 s'));
  await waitFor('applied after the resync', async () => (await s.db.read('/qubes-firewall-applied/10.137.0.7')) === '1 ok 1 rules');
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['accept comment "policy"']);
  await s.engine.stop();
});

// ---- issue 13.1: a tightening is never silently left unapplied ----

test('13.1: a watch reconnect applies a tightening whose marker event was lost', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }));
  await s.engine.start();
  await dom0Write(s, '10.137.0.7', { policy: 'drop' }, { loseMarker: true });
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['accept comment "policy"'], 'nothing yet: the marker event was lost');
  // The QubesDB client reports every watched path once after it reconnected.
  s.engine.onWatchEvent('/qubes-firewall/');
  await s.engine.idle();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['reject with icmp type admin-prohibited comment "policy"']);
  assert.equal(await s.db.read('/qubes-firewall-applied/10.137.0.7'), '2 ok 1 rules');
  await s.engine.stop();
});

test('13: a QubesDB daemon restart (empty database at the reconnect) keeps the rules in force until dom0 writes them again', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }), { writingTimeoutMs: 60_000 });
  await s.engine.start();
  // The daemon restarted empty; the client reconnects and reports the watched paths once.
  await s.db.rm('/qubes-firewall/');
  s.engine.onWatchEvent('/qubes-firewall/');
  await s.engine.idle();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['accept comment "policy"'], 'the rules stay while dom0 has not written again');
  // dom0 writes the qube's keys again (here tighter than before): applied at the marker.
  await dom0Write(s, '10.137.0.7', { policy: 'drop' });
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['reject with icmp type admin-prohibited comment "policy"']);
  await s.engine.stop();
});

test('13: after a reconnect, a qube whose marker never comes back loses its rules when the rewrite times out (fail closed)', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }), { writingTimeoutMs: 50 });
  await s.engine.start();
  await s.db.rm('/qubes-firewall/');
  s.engine.onWatchEvent('/qubes-firewall/');
  await s.engine.idle();
  await waitFor('the rules removed after the rewrite timed out', () => s.kernel.chain(4, 'qbs-10-137-0-7') === undefined);
  await s.engine.stop();
});

test('13.1: SIGHUP (reload) applies a tightening whose marker event was lost', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }));
  await s.engine.start();
  await dom0Write(s, '10.137.0.7', { policy: 'drop' }, { loseMarker: true });
  await s.engine.reload();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['reject with icmp type admin-prohibited comment "policy"']);
  await s.engine.stop();
});

test('13.1: "writing" expires: without any reconnect the rules in QubesDB are applied', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }), { writingTimeoutMs: 50 });
  await s.engine.start();
  await dom0Write(s, '10.137.0.7', { policy: 'drop' }, { loseMarker: true });
  await waitFor('the tightening applied after the rewrite timed out', () => s.kernel.chain(4, 'qbs-10-137-0-7')?.[0] === 'reject with icmp type admin-prohibited comment "policy"');
  assert.ok(s.logs.some((l) => l.msg === 'rules changed without a marker: applying what QubesDB holds' && l.ip === '10.137.0.7'));
  await s.engine.stop();
});

test('13.1: back-to-back rewrites: a marker processed while the next rewrite starts applies nothing half-written', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=icmp' }));
  await s.engine.start();
  const before = s.kernel.chain(4, 'qbs-10-137-0-7');
  // dom0 wrote version 2 and its marker, and already began version 3 (only its policy so far)
  // when the engine handles version 2's marker event.
  await s.db.rm('/qubes-firewall/10.137.0.7/');
  await s.db.write('/qubes-firewall/10.137.0.7/policy', 'accept');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/policy');
  await s.engine.idle();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), before, 'the half-written accept-all was not applied');
  await s.db.write('/qubes-firewall/10.137.0.7/0000', 'action=drop proto=tcp');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7/0000');
  await s.db.write('/qubes-firewall/10.137.0.7', '');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.7');
  await s.engine.idle();
  assert.deepEqual(s.kernel.chain(4, 'qbs-10-137-0-7'), ['meta l4proto tcp reject with icmp type admin-prohibited comment "0000"', 'accept comment "policy"']);
  await s.engine.stop();
});

test('13.1: dns-addr is committed only after the kernel accepted it, and retried', async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'drop', '0000': 'action=accept specialtarget=dns' }));
  await s.engine.start();
  s.kernel.rejectIf = (text) => (text.includes('192.0.2.53') ? 'Error: Could not process rule: No buffer space available' : undefined);
  s.dns.servers = { v4: ['192.0.2.53'], v6: [] };
  s.engine.dnsMaybeChanged();
  await s.engine.idle();
  assert.deepEqual(s.kernel.dnsAddr(4), ['10.139.1.1']);
  assert.deepEqual(s.engine.status().dnsServers.v4, ['10.139.1.1'], 'not committed');
  s.kernel.rejectIf = undefined;
  await waitFor('the retry applied', () => s.kernel.dnsAddr(4)[0] === '192.0.2.53');
  await s.engine.idle();
  assert.deepEqual(s.engine.status().dnsServers.v4, ['192.0.2.53']);
  await s.engine.stop();
});

test('13.1: a failed removal keeps the qube known, so a resync retries it', async () => {
  const s = await setup({ ...qube('10.137.0.7', { policy: 'accept' }), ...qube('10.137.0.8', { policy: 'accept' }) });
  await s.engine.start();
  s.kernel.rejectIf = (text) => (text.includes('delete chain ip qubes-firewall qbs-10-137-0-8') ? 'Error: injected' : undefined);
  await s.db.rm('/qubes-firewall/10.137.0.8/');
  await s.db.rm('/qubes-firewall/10.137.0.8');
  s.engine.onWatchEvent('/qubes-firewall/10.137.0.8');
  await s.engine.idle();
  assert.ok(s.kernel.chain(4, 'qbs-10-137-0-8'), 'still there: nft refused');
  s.kernel.rejectIf = undefined;
  await waitFor('removed by the resync', () => s.kernel.chain(4, 'qbs-10-137-0-8') === undefined);
  assert.equal(s.kernel.dispatch(4).has('10.137.0.8'), false);
  await s.engine.stop();
});

// ---- issue 16.2: upstream's chains, and what users add to them, survive every rebuild ----

test("16.2: forward's rules are added once, at its top; user rules in forward, qubes-forward, prerouting and postrouting survive start, rebuilds, reload and a new engine", async () => {
  const s = await setup(qube('10.137.0.7', { policy: 'accept' }));
  const t4 = firewallTable(4);
  // A user rule appended before our first start (the network agent runs hooks first).
  assert.deepEqual(await s.kernel.apply(new NftTransaction().addRule(t4, 'forward', 'ip daddr 192.0.2.1 drop', { comment: 'user-early' })), { ok: true });
  await s.engine.start();
  const ours = ['ct state established,related accept', 'iifname != "vif*" accept', 'jump qubes-forward', 'ip saddr vmap @dispatch'].map((r) => `${r} comment "qubes-net"`);
  assert.deepEqual(s.kernel.chain(4, 'forward'), [...ours, 'ip daddr 192.0.2.1 drop comment "user-early"']);
  const user = new NftTransaction()
    .addRule(t4, 'forward', 'ip daddr 192.0.2.2 drop', { comment: 'user' })
    .addRule(t4, 'qubes-forward', 'ip daddr 192.0.2.3 drop', { comment: 'user' })
    .addRule(t4, 'prerouting', 'ip saddr 192.0.2.4 drop', { comment: 'user' })
    .addRule(t4, 'postrouting', 'ip daddr 192.0.2.5 drop', { comment: 'user' });
  assert.deepEqual(await s.kernel.apply(user), { ok: true });
  const snapshot = () => ['forward', 'qubes-forward', 'prerouting', 'postrouting'].map((c) => s.kernel.chain(4, c));
  const before = snapshot();
  await dom0Write(s, '10.137.0.7', { policy: 'drop', '0000': 'action=accept proto=icmp' });
  await s.engine.reload();
  // What the driver does on every base load.
  assert.deepEqual(await s.kernel.apply(addFirewallSkeleton(new NftTransaction())), { ok: true });
  await s.engine.stop();
  const again = new FirewallEngine({ db: s.db, log: pino({ level: 'silent' }), kernel: s.kernel, resolve: async () => ({ ok: false, error: 'none' }), readDnsServers: async () => s.dns.servers });
  await again.start();
  await again.stop();
  assert.deepEqual(snapshot(), before);
  assert.equal(s.kernel.chain(4, 'qbs-10-137-0-7')!.length, 2);
});
