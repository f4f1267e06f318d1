// Base ruleset and flowtable text (pure): upstream's contract (tables, sets, user chains,
// groups), our priorities from docs/contracts.md, idempotent shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { baseRulesetScript, elementStatements, flowtableBaseStatements, flowtableDeviceStatements, flowtableDevicesFromJson, OWN_CHAINS, computeDnsMapping } from '@qubes-net/driver-agent';

const dns = computeDnsMapping({ virtualDns: ['10.139.1.1', '10.139.1.2'], servers4: ['198.51.100.53'], ownAddresses: new Set(), behindQubesProvider: false }).mapping;
const script = baseRulesetScript({ ipv6: true, connected4: ['10.137.0.7', '10.137.0.8'], connected6: ['fd09::7'], dns });
const lines = script.trim().split('\n');

test('tables, sets and user chains are only added, never flushed or deleted', () => {
  for (const f of ['ip', 'ip6']) {
    assert.ok(lines.includes(`add table ${f} qubes`));
    assert.ok(lines.some((l) => l.startsWith(`add set ${f} qubes allowed { type ifname . `)));
    assert.ok(lines.some((l) => l.startsWith(`add set ${f} qubes downstream {`)));
    for (const c of ['custom-input', 'custom-forward']) {
      assert.ok(lines.includes(`add chain ${f} qubes ${c}`));
      assert.ok(!lines.some((l) => /^(flush|delete)/.test(l) && l.includes(c)), `${c} never flushed`);
    }
    assert.ok(!lines.some((l) => /^(flush|delete) set \S+ qubes (allowed|downstream)/.test(l)), 'vif sets never flushed');
    assert.ok(!lines.some((l) => l.startsWith('delete')), 'nothing deleted');
  }
});

test('every own chain is flushed before its rules are added (no duplicates on reload)', () => {
  for (const f of ['ip', 'ip6'] as const) {
    for (const c of OWN_CHAINS[f]) {
      const flush = lines.indexOf(`flush chain ${f} qubes ${c}`);
      const firstRule = lines.findIndex((l) => l.startsWith(`add rule ${f} qubes ${c} `));
      assert.ok(flush >= 0 && firstRule > flush, `${f} ${c}`);
    }
  }
});

test('base chain priorities are the documented ones, distinct per hook', () => {
  const hooks = lines.filter((l) => l.includes(' hook ')).map((l) => {
    const m = /^add chain (ip6?) qubes (\S+) \{ type (\w+) hook (\w+) priority ([^;]+);/.exec(l)!;
    return { family: m[1], chain: m[2], hook: m[4], prio: m[5] };
  });
  const expect: Record<string, string> = { prerouting: 'raw', 'dnat-dns': 'dstnat', input: 'filter', forward: 'filter', 'egress-guard': 'filter + 50', postrouting: 'srcnat' };
  for (const h of hooks) assert.equal(h.prio, expect[h.chain!], h.chain);
  for (const f of ['ip', 'ip6']) {
    const seen = new Set<string>();
    for (const h of hooks.filter((x) => x.family === f)) {
      const key = `${h.hook} ${h.prio}`;
      assert.ok(!seen.has(key), `two ${f} chains on ${key}`);
      seen.add(key);
    }
  }
});

test('anti-spoofing, input policy drop, forward block towards vifs, egress guard, masquerade', () => {
  assert.ok(lines.includes('add rule ip qubes prerouting iifgroup 2 goto antispoof'));
  assert.ok(lines.includes('add rule ip qubes prerouting iifname "vif*" goto antispoof'));
  assert.ok(lines.includes('add rule ip qubes antispoof iifname . ip saddr @allowed accept'));
  assert.ok(lines.includes('add rule ip6 qubes antispoof iifname . ip6 saddr @allowed accept'));
  assert.ok(lines.includes('add rule ip qubes prerouting ip saddr @connected counter drop'));
  assert.ok(lines.some((l) => l.startsWith('add chain ip qubes input {') && l.includes('policy drop')));
  assert.ok(lines.includes('add rule ip qubes forward oifgroup 2 counter drop'));
  assert.ok(lines.includes('add rule ip qubes egress-guard ip daddr @downstream counter drop'));
  assert.ok(lines.includes('add rule ip6 qubes egress-guard ip6 daddr @connected counter drop'));
  const post = lines.filter((l) => l.startsWith('add rule ip qubes postrouting'));
  assert.deepEqual(post, ['add rule ip qubes postrouting oifgroup 2 accept', 'add rule ip qubes postrouting oif "lo" accept', 'add rule ip qubes postrouting masquerade']);
  assert.ok(lines.indexOf('add rule ip qubes forward jump custom-forward') < lines.indexOf('add rule ip qubes forward oifgroup 2 counter drop'));
});

test('connected addresses replace the set atomically; dnat-dns is in the same transaction', () => {
  assert.ok(lines.includes('flush set ip qubes connected'));
  assert.ok(lines.includes('add element ip qubes connected { 10.137.0.7, 10.137.0.8 }'));
  assert.ok(lines.includes('add element ip6 qubes connected { fd09::7 }'));
  assert.ok(lines.includes('add rule ip qubes dnat-dns ip daddr 10.139.1.2 tcp dport 53 dnat to 198.51.100.53'));
});

test('without IPv6 in the kernel the ip6 table is left out', () => {
  const s = baseRulesetScript({ ipv6: false, connected4: [], connected6: ['fd09::7'], dns });
  assert.ok(!s.includes('ip6 qubes'));
  assert.ok(!s.includes('add element ip qubes connected'));
});

test('firewall skeleton and extra statements ride in the same transaction', () => {
  const s = baseRulesetScript({ ipv6: false, connected4: [], connected6: [], dns, firewallSkeleton: 'add table ip qubes-firewall\n', extra: ['add element ip qubes downstream { 10.137.0.9 }'] });
  assert.ok(s.includes('add table ip qubes-firewall\nadd element ip qubes downstream { 10.137.0.9 }\n'));
});

test('element removals are add-then-delete (no failure on a missing element)', () => {
  const s = elementStatements([{ family: 'ip', set: 'downstream', add: ['10.137.0.8'], remove: ['10.137.0.7'] }]);
  assert.deepEqual(s, ['add element ip qubes downstream { 10.137.0.7 }', 'delete element ip qubes downstream { 10.137.0.7 }', 'add element ip qubes downstream { 10.137.0.8 }']);
  assert.deepEqual(elementStatements([{ family: 'ip6', set: 'allowed', add: [], remove: [] }]), []);
});

test('flowtable: created once with its devices, then changed incrementally', () => {
  const base = flowtableBaseStatements(['eth0', 'vif5.0']);
  assert.deepEqual(base.slice(0, 3), [
    'add table inet qubes-nat-accel',
    'add flowtable inet qubes-nat-accel qubes-accel { hook ingress priority filter; devices = { "eth0", "vif5.0" }; }',
    'add chain inet qubes-nat-accel qubes-accel { type filter hook forward priority filter + 20; policy accept; }',
  ]);
  assert.ok(base.includes('add rule inet qubes-nat-accel qubes-accel meta l4proto { tcp, udp } iifgroup 2 oifgroup 1 flow add @qubes-accel'));
  assert.ok(!base.some((s) => s.startsWith('delete')), 'never rebuilt');
  assert.deepEqual(flowtableDeviceStatements(['vif7.0'], ['vif5.0']), [
    'delete flowtable inet qubes-nat-accel qubes-accel { devices = { "vif5.0" }; }',
    'add flowtable inet qubes-nat-accel qubes-accel { hook ingress priority filter; devices = { "vif7.0" }; }',
  ]);
  assert.deepEqual(flowtableDeviceStatements([], []), []);
  assert.deepEqual(flowtableBaseStatements([])[1], 'add flowtable inet qubes-nat-accel qubes-accel { hook ingress priority filter; }');
});

test('flowtable devices read back from nft JSON (one device is a string, several a list)', () => {
  const doc = (dev: unknown) => ({ nftables: [{ metainfo: {} }, { flowtable: { family: 'inet', name: 'qubes-accel', table: 'qubes-nat-accel', hook: 'ingress', prio: 0, dev } }] });
  assert.deepEqual(flowtableDevicesFromJson(doc(['eth0', 'vif5.0'])), ['eth0', 'vif5.0']);
  assert.deepEqual(flowtableDevicesFromJson(doc('eth0')), ['eth0']);
  assert.deepEqual(flowtableDevicesFromJson(doc(undefined)), []);
  assert.deepEqual(flowtableDevicesFromJson(undefined), []);
});
