// The compiler: upstream's meaning of each rule, fail-closed outcomes, and the exact nft
// transaction of one qube (touching only that qube).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NftTransaction } from '@qubes-net/common/kernel';
import {
  parseQubeEntries, compileQube, qubeUpdateScript, qubeRemovalScript, dnsSetScript, outcomeSummary, firewallSkeleton, staleObjectsScript, addForwardRules, forwardRulesPresent,
  type Target, type HostResolution,
} from '@qubes-net/firewall';

const V4: Target = { addr: '10.137.0.7', family: 4 };
const V6: Target = { addr: 'fd09:24ef:4179::a89:7', family: 6 };

function compile(target: Target, rules: Record<string, string>, names: Record<string, HostResolution> = {}) {
  const m = new Map(Object.entries(rules).map(([k, v]) => [`/qubes-firewall/${target.addr}/${k}`, v]));
  return compileQube(parseQubeEntries(target, m), new Map(Object.entries(names)));
}

function body(script: string): string[] {
  return script.trim().split('\n').filter((l) => l.startsWith('add rule')).map((l) => l.replace(/^add rule \S+ qubes-firewall \S+ /, ''));
}

test('each rule becomes one nft rule, in order, with upstream meaning', () => {
  const c = compile(V4, {
    policy: 'drop',
    '0000': 'action=accept proto=icmp',
    '0001': 'action=accept specialtarget=dns',
    '0002': 'action=drop dst4=1.2.3.0/24 proto=tcp dstports=80-80',
    '0003': 'action=accept dstports=1000-2000',
    '0004': 'action=accept proto=icmp icmptype=8',
    '0005': 'action=accept dsthost=example.test proto=tcp dstports=443-443',
    '0007': 'action=accept proto=udp dst4=10.0.0.1',
  }, { 'example.test': { ok: true, addrs: ['203.0.113.80', '203.0.113.81', '203.0.113.80'], ttlSeconds: 60 } });
  assert.equal(c.outcome, 'ok');
  assert.equal(c.chain, 'qbs-10-137-0-7');
  assert.deepEqual(body(qubeUpdateScript(c)), [
    'meta l4proto icmp accept comment "0000"',
    'ip daddr @dns-addr meta l4proto { tcp, udp } th dport 53 accept comment "0001"',
    'ip daddr 1.2.3.0/24 tcp dport 80 reject with icmp type admin-prohibited comment "0002"',
    'meta l4proto { tcp, udp } th dport 1000-2000 accept comment "0003"',
    'icmp type 8 accept comment "0004"',
    'ip daddr { 203.0.113.80, 203.0.113.81 } tcp dport 443 accept comment "0005"',
    'meta l4proto udp ip daddr 10.0.0.1 accept comment "0007"',
    'reject with icmp type admin-prohibited comment "policy"',
  ]);
  assert.deepEqual([...c.hosts], [['example.test', ['203.0.113.80', '203.0.113.81']]]);
  assert.equal(outcomeSummary(c), 'ok 8 rules');
});

test('IPv6: ip6 keywords, icmpv6, admin-prohibited for icmpv6, chain named like upstream', () => {
  const c = compile(V6, {
    policy: 'accept',
    '0000': 'action=drop proto=icmp icmptype=128',
    '0001': 'action=drop dst6=fd00::/8 proto=udp dstports=53-53',
    '0002': 'action=accept proto=icmp',
    '0003': 'action=accept specialtarget=dns proto=udp',
  });
  assert.equal(c.chain, 'qbs-fd09-24ef-4179--a89-7');
  const script = qubeUpdateScript(c);
  assert.deepEqual(body(script), [
    'icmpv6 type 128 reject with icmpv6 type admin-prohibited comment "0000"',
    'ip6 daddr fd00::/8 udp dport 53 reject with icmpv6 type admin-prohibited comment "0001"',
    'meta l4proto ipv6-icmp accept comment "0002"',
    'ip6 daddr @dns-addr udp dport 53 accept comment "0003"',
    'accept comment "policy"',
  ]);
  assert.ok(script.startsWith('add chain ip6 qubes-firewall qbs-fd09-24ef-4179--a89-7\nflush chain ip6 qubes-firewall qbs-fd09-24ef-4179--a89-7\n'));
  assert.ok(script.endsWith('add element ip6 qubes-firewall dispatch { fd09:24ef:4179::a89:7 : jump qbs-fd09-24ef-4179--a89-7 }\n'));
});

test('one qube\'s transaction touches only that qube: its chain and its dispatch element', () => {
  const script = qubeUpdateScript(compile(V4, { policy: 'drop', '0000': 'action=accept proto=tcp' }));
  for (const line of script.trim().split('\n')) {
    assert.ok(line.includes('qbs-10-137-0-7') || line.includes('{ 10.137.0.7 :'), line);
    assert.doesNotMatch(line, /flush (table|ruleset|set|map)|delete/);
  }
});

test('specialtarget=dns with dstports: 53 within the range keeps the rule, otherwise it matches nothing', () => {
  const c = compile(V4, { policy: 'drop', '0000': 'action=accept specialtarget=dns dstports=1-100', '0001': 'action=drop specialtarget=dns proto=tcp dstports=80-80' });
  assert.equal(c.outcome, 'ok');
  assert.deepEqual(body(qubeUpdateScript(c)), ['ip daddr @dns-addr meta l4proto { tcp, udp } th dport 53 accept comment "0000"', 'reject with icmp type admin-prohibited comment "policy"']);
  assert.match(c.notes[0]!, /0001 left out/);
});

test('a parse error blocks that qube: one reject-all rule, reason reported', () => {
  const c = compile(V4, { policy: 'accept', '0000': 'action=accept proto=tcp dstports=80' });
  assert.equal(c.outcome, 'blocked');
  assert.deepEqual(body(qubeUpdateScript(c)), ['reject with icmp type admin-prohibited comment "blocked"']);
  assert.match(outcomeSummary(c), /^blocked invalid rules: 0000: bad-ports/);
  const v6 = compile(V6, { '0000': 'action=accept' });
  assert.deepEqual(body(qubeUpdateScript(v6)), ['reject with icmpv6 type admin-prohibited comment "blocked"']);
});

test('an unresolvable name: accept rule left out (partial), drop rule blocks the qube', () => {
  const unresolved: HostResolution = { ok: false, error: 'timeout' };
  const partial = compile(V4, { policy: 'drop', '0000': 'action=accept dsthost=gone.test', '0001': 'action=accept proto=icmp' }, { 'gone.test': unresolved });
  assert.equal(partial.outcome, 'partial');
  assert.deepEqual(body(qubeUpdateScript(partial)), ['meta l4proto icmp accept comment "0001"', 'reject with icmp type admin-prohibited comment "policy"']);
  assert.match(outcomeSummary(partial), /^partial rule 0000 left out: dsthost gone.test did not resolve \(timeout\)/);

  const blocked = compile(V4, { policy: 'accept', '0000': 'action=drop dsthost=gone.test' }, { 'gone.test': unresolved });
  assert.equal(blocked.outcome, 'blocked');
  assert.deepEqual(body(qubeUpdateScript(blocked)), ['reject with icmp type admin-prohibited comment "blocked"']);
  // A name never handed to the compiler counts as unresolved too.
  assert.equal(compile(V4, { policy: 'accept', '0000': 'action=drop dsthost=x.test' }).outcome, 'blocked');
});

test('a name without addresses of this family matches nothing: left out, not partial', () => {
  const c = compile(V6, { policy: 'drop', '0000': 'action=drop dsthost=v4only.test', '0001': 'action=accept dsthost=v4only.test' }, { 'v4only.test': { ok: true, addrs: [], ttlSeconds: 300 } });
  assert.equal(c.outcome, 'ok');
  assert.deepEqual(body(qubeUpdateScript(c)), ['reject with icmpv6 type admin-prohibited comment "policy"']);
});

test('removal, dns-addr and the skeleton scripts', () => {
  assert.equal(qubeRemovalScript('10.137.0.7', 4), [
    'add chain ip qubes-firewall qbs-10-137-0-7',
    'add element ip qubes-firewall dispatch { 10.137.0.7 : jump qbs-10-137-0-7 }',
    'delete element ip qubes-firewall dispatch { 10.137.0.7 }',
    'add chain ip qubes-firewall qbs-10-137-0-7',
    'flush chain ip qubes-firewall qbs-10-137-0-7',
    'delete chain ip qubes-firewall qbs-10-137-0-7',
  ].join('\n') + '\n');
  assert.equal(dnsSetScript(4, ['10.139.1.1', '10.139.1.2', '10.139.1.1']), 'flush set ip qubes-firewall dns-addr\nadd element ip qubes-firewall dns-addr { 10.139.1.1, 10.139.1.2 }\n');
  assert.equal(dnsSetScript(6, []), 'flush set ip6 qubes-firewall dns-addr\n');
  const skel = firewallSkeleton();
  assert.match(skel, /add chain ip qubes-firewall forward \{ type filter hook forward priority filter \+ 10; policy drop; \}/);
  // Upstream's chain names, all present; the skeleton holds objects only: no rule, no flush,
  // no delete, so loading it again can touch nothing a user added.
  for (const fam of ['ip', 'ip6']) {
    assert.match(skel, new RegExp(`add chain ${fam} qubes-firewall qubes-forward\n`));
    assert.match(skel, new RegExp(`add chain ${fam} qubes-firewall prerouting \\{ type filter hook prerouting priority raw \\+ 10; policy accept; \\}`));
    assert.match(skel, new RegExp(`add chain ${fam} qubes-firewall postrouting \\{ type filter hook postrouting priority raw \\+ 10; policy accept; \\}`));
  }
  assert.deepEqual(skel.split('\n').filter((l) => /flush|delete|rule/.test(l)), []);
  // forward's own rules, inserted at its top once: in upstream's order after the inserts.
  assert.deepEqual(addForwardRules(new NftTransaction(), 6).render().trim().split('\n'), [
    'insert rule ip6 qubes-firewall forward ip6 saddr vmap @dispatch comment "qubes-net"',
    'insert rule ip6 qubes-firewall forward jump qubes-forward comment "qubes-net"',
    'insert rule ip6 qubes-firewall forward iifname != "vif*" accept comment "qubes-net"',
    'insert rule ip6 qubes-firewall forward ct state established,related accept comment "qubes-net"',
  ]);
  assert.equal(forwardRulesPresent(undefined), false);
  assert.equal(forwardRulesPresent({ nftables: [{ rule: { chain: 'forward', comment: 'user' } }] }), false);
  assert.equal(forwardRulesPresent({ nftables: [{ rule: { chain: 'forward', comment: 'qubes-net' } }] }), true);
});

test('stale objects: elements and qbs- chains of qubes no longer wanted; user chains kept', () => {
  const script = staleObjectsScript(4, {
    dispatch: new Map([['10.137.0.7', 'qbs-10-137-0-7'], ['10.137.0.8', 'qbs-10-137-0-8'], ['10.137.0.9', 'qbs-10-137-0-7']]),
    chains: ['forward', 'qbs-10-137-0-7', 'qbs-10-137-0-8', 'qbs-orphan', 'my-user-chain'],
  }, new Set(['10.137.0.7']));
  assert.deepEqual(script.trim().split('\n'), [
    'delete element ip qubes-firewall dispatch { 10.137.0.8 }',
    'delete element ip qubes-firewall dispatch { 10.137.0.9 }',
    'flush chain ip qubes-firewall qbs-10-137-0-8',
    'delete chain ip qubes-firewall qbs-10-137-0-8',
    'flush chain ip qubes-firewall qbs-orphan',
    'delete chain ip qubes-firewall qbs-orphan',
  ]);
  assert.equal(staleObjectsScript(4, { dispatch: new Map(), chains: ['forward'] }, new Set()), '');
});
