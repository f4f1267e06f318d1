import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFirewallRule, parseDstHost, parseDstPorts, parseIcmpType, serializeRule, firewallEntries, defaultFirewall, FirewallRuleError } from '@qubes-net/lab';

test('DstHost: addresses get a prefix, networks keep theirs, junk is rejected', () => {
  assert.deepEqual(parseDstHost('127.0.0.1'), { kind: 'dst4', value: '127.0.0.1/32' });
  assert.deepEqual(parseDstHost('127.0.0.0/8'), { kind: 'dst4', value: '127.0.0.0/8' });
  assert.deepEqual(parseDstHost('2001:abcd:efab::3'), { kind: 'dst6', value: '2001:abcd:efab::3/128' });
  assert.deepEqual(parseDstHost('2001:abcd:efab::/64'), { kind: 'dst6', value: '2001:abcd:efab::/64' });
  assert.deepEqual(parseDstHost('www.example.test'), { kind: 'dsthost', value: 'www.example.test' });
  for (const bad of ['127.0.0.0/33', '127.0.0.0/-1', '127/8', '137.327.0.0/16', '1.2.3.4.5/32', '2001:abcd:efab::3/129', '2001:abcd:efab:::3', 'www.example.com/24', 'www example.com', 'http://example.com/', '', 'WWW.example.com']) {
    assert.throws(() => parseDstHost(bad), FirewallRuleError, bad);
  }
});

test('DstPorts and IcmpType', () => {
  assert.equal(parseDstPorts('80'), '80-80');
  assert.equal(parseDstPorts(80), '80-80');
  assert.equal(parseDstPorts('80-90'), '80-90');
  for (const bad of ['80-90-100', 'abcdef', '80 90', '', '100-20', '65536', '-1', '080']) assert.throws(() => parseDstPorts(bad), FirewallRuleError, bad);
  assert.equal(parseIcmpType(8), 8);
  assert.equal(parseIcmpType('8'), 8);
  for (const bad of [600, -1, 'abcde', '']) assert.throws(() => parseIcmpType(bad), FirewallRuleError, String(bad));
});

test('rule options depend on proto; only dns is a special target; unknown options fail', () => {
  assert.throws(() => parseFirewallRule('action=accept dstports=80'), /needs proto/);
  assert.throws(() => parseFirewallRule('action=accept proto=tcp icmptype=8'), /needs proto=icmp/);
  assert.throws(() => parseFirewallRule('action=accept specialtarget=ntp'), /only "dns"/);
  assert.throws(() => parseFirewallRule('action=allow'), /accept or drop/);
  assert.throws(() => parseFirewallRule('action=accept colour=red'), /unknown rule option/);
  assert.throws(() => parseFirewallRule('action=accept proto'), /KEY=VALUE/);
  assert.throws(() => parseFirewallRule('action=accept dst4=2001:db8::1'), /not an IPv4/);
});

test('serialization: key order as dom0 writes it; expire and comment never written', () => {
  const cases: Array<[string, string]> = [
    ['action=drop proto=icmp', 'action=drop proto=icmp'],
    ['action=drop proto=tcp dstports=80', 'action=drop proto=tcp dstports=80-80'],
    ['action=accept proto=udp', 'action=accept proto=udp'],
    ['action=accept specialtarget=dns', 'action=accept specialtarget=dns'],
    ['dstports=80 proto=tcp dsthost=1.2.3.0/24 action=accept', 'action=accept dst4=1.2.3.0/24 proto=tcp dstports=80-80'],
    ['icmptype=8 proto=icmp action=accept comment=ping expire=+600', 'action=accept proto=icmp icmptype=8'],
  ];
  for (const [input, want] of cases) assert.equal(serializeRule(parseFirewallRule(input, 0)), want, input);
});

test('test_005_qdb_entries: the four-rule example', () => {
  const rules = ['action=drop proto=icmp', 'action=drop proto=tcp dstports=80', 'action=accept proto=udp', 'action=accept specialtarget=dns'].map((r) => parseFirewallRule(r));
  assert.deepEqual(Object.fromEntries(firewallEntries(rules, 4)), {
    policy: 'drop', '0000': 'action=drop proto=icmp', '0001': 'action=drop proto=tcp dstports=80-80', '0002': 'action=accept proto=udp', '0003': 'action=accept specialtarget=dns',
  });
  assert.deepEqual(firewallEntries(defaultFirewall(), 6), [['policy', 'drop'], ['0000', 'action=accept']]);
});
