import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, ruleVerdict, chainVerdict, uplinkOf, parseFirewallRule, parseTopology } from '@qubes-net/lab';

const hosts: Record<string, string[]> = { 'www.example.test': ['203.0.113.80', '2001:db8:80::80'] };
const resolve = (h: string) => hosts[h] ?? [];
const rules = (...r: string[]) => r.map((x) => parseFirewallRule(x, 0));

test('cidrContains for both families', () => {
  assert.equal(cidrContains('203.0.113.0/24', '203.0.113.80'), true);
  assert.equal(cidrContains('203.0.113.0/25', '203.0.113.200'), false);
  assert.equal(cidrContains('0.0.0.0/0', '1.2.3.4'), true);
  assert.equal(cidrContains('2001:db8::/32', '2001:db8:80::80'), true);
  assert.equal(cidrContains('2001:db8::/32', '203.0.113.80'), false);
});

test('first matching rule decides; policy drop; specialtarget=dns only on port 53 to a resolver', () => {
  const r = rules('action=accept specialtarget=dns', 'action=accept proto=icmp', 'action=accept dsthost=www.example.test proto=tcp dstports=80', 'action=drop');
  assert.equal(ruleVerdict(r, { proto: 'udp', dst: '10.139.1.1', port: 53, dns: true }, resolve), 'accept');
  assert.equal(ruleVerdict(r, { proto: 'udp', dst: '203.0.113.80', port: 53 }, resolve), 'drop');
  assert.equal(ruleVerdict(r, { proto: 'udp', dst: 'fd09:24ef:4179::a8b:1', port: 53, dns: true }, resolve), 'accept', 'the IPv6 virtual DNS too');
  assert.equal(ruleVerdict(r, { proto: 'icmp', dst: '203.0.113.81', icmpType: 8 }, resolve), 'accept');
  assert.equal(ruleVerdict(r, { proto: 'tcp', dst: '2001:db8:80::80', port: 80 }, resolve), 'accept');
  assert.equal(ruleVerdict(r, { proto: 'tcp', dst: '203.0.113.80', port: 1234 }, resolve), 'drop');
  assert.equal(ruleVerdict([], { proto: 'tcp', dst: '203.0.113.80', port: 80 }, resolve), 'drop');
  assert.equal(ruleVerdict(rules('action=drop dsthost=203.0.113.80 proto=tcp', 'action=accept'), { proto: 'tcp', dst: '203.0.113.80', port: 80 }, resolve), 'drop');
  // Expired rules no longer count.
  assert.equal(ruleVerdict([parseFirewallRule({ action: 'accept', expire: 10 })], { proto: 'tcp', dst: '1.2.3.4', port: 1 }, resolve, 100), 'drop');
});

test('the chain: each hop\'s rules apply to the masqueraded traffic of the hop below', () => {
  const m = parseTopology(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, firewall: ["action=drop"] }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true, firewall: ["action=accept proto=tcp", "action=drop"] }
  - { name: work, qid: 7, netvm: sys-firewall }
  - { name: lonely, qid: 8, provides_network: true }
  - { name: behind, qid: 9, netvm: lonely }
`);
  assert.deepEqual(chainVerdict(m, 'work', { proto: 'tcp', dst: '203.0.113.80', port: 80 }, resolve), { verdict: 'accept' });
  assert.deepEqual(chainVerdict(m, 'work', { proto: 'icmp', dst: '203.0.113.80' }, resolve), { verdict: 'drop', decidedBy: 'sys-firewall' });
  // A provider's own traffic meets its own rules in its netvm; sys-net's rules are never
  // applied (nothing above it).
  assert.deepEqual(chainVerdict(m, 'sys-firewall', { proto: 'icmp', dst: '203.0.113.80' }, resolve), { verdict: 'drop', decidedBy: 'sys-firewall' });
  assert.deepEqual(chainVerdict(m, 'sys-net', { proto: 'icmp', dst: '203.0.113.80' }, resolve), { verdict: 'accept' });
  assert.equal(uplinkOf(m, 'work'), 'sys-net');
  assert.equal(uplinkOf(m, 'behind'), undefined);
});
