// Which established flows the new rules forbid: numeric ports (upstream compared strings),
// the post-DNAT destination, ICMP flows, and the exact deletion arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseConntrackLine, parseConntrackList, forbiddenConnections, isBlocked, conntrackDeleteArgs, compileQube, parseQubeEntries, cidrContains,
  type Target, type HostResolution,
} from '@qubes-net/firewall';

const V4: Target = { addr: '10.137.0.7', family: 4 };
const V6: Target = { addr: 'fd09:24ef:4179::a89:7', family: 6 };

const TCP_1500 = 'tcp      6 431999 ESTABLISHED src=10.137.0.7 dst=203.0.113.80 sport=41234 dport=1500 src=203.0.113.80 dst=10.137.0.7 sport=1500 dport=41234 [ASSURED] mark=0 use=1';
const TCP_150 = 'tcp      6 431999 ESTABLISHED src=10.137.0.7 dst=203.0.113.80 sport=41236 dport=150 src=203.0.113.80 dst=192.168.0.2 sport=150 dport=41236 [ASSURED] mark=0 use=1';
const UDP_DNS_DNAT = 'udp      17 29 src=10.137.0.7 dst=10.139.1.1 sport=5353 dport=53 src=192.0.2.53 dst=10.137.0.7 sport=53 dport=5353 mark=0 use=1';
const PING = 'icmp     1 29 src=10.137.0.7 dst=203.0.113.80 type=8 code=0 id=4242 src=203.0.113.80 dst=10.137.0.7 type=0 code=0 id=4242 mark=0 use=1';
const OTHER_SRC = 'tcp      6 431999 ESTABLISHED src=10.137.0.8 dst=203.0.113.80 sport=1 dport=1500 src=203.0.113.80 dst=10.137.0.8 sport=1500 dport=1 [ASSURED] mark=0 use=1';
const V6_TCP = 'tcp      6 431999 ESTABLISHED src=fd09:24ef:4179::a89:7 dst=2001:db8::80 sport=40000 dport=4321 src=2001:db8::80 dst=fd09:24ef:4179::a89:7 sport=4321 dport=40000 [ASSURED] mark=0 use=1';
const V6_PING = 'ipv6-icmp 58 29 src=fd09:24ef:4179::a89:7 dst=2001:db8::80 type=128 code=0 id=7 src=2001:db8::80 dst=fd09:24ef:4179::a89:7 type=129 code=0 id=7 mark=0 use=1';

function rules(target: Target, r: Record<string, string>, names: Record<string, HostResolution> = {}) {
  const m = new Map(Object.entries(r).map(([k, v]) => [`/qubes-firewall/${target.addr}/${k}`, v]));
  return compileQube(parseQubeEntries(target, m), new Map(Object.entries(names))).rules;
}

test('conntrack lines parse into both tuples; junk lines are ignored', () => {
  const c = parseConntrackLine(4, TCP_150)!;
  assert.deepEqual(c.orig, { src: '10.137.0.7', dst: '203.0.113.80', sport: 41236, dport: 150 });
  assert.deepEqual(c.reply, { src: '203.0.113.80', dst: '192.168.0.2', sport: 150, dport: 41236 });
  assert.equal(c.protoNum, 6);
  const p = parseConntrackLine(4, PING)!;
  assert.deepEqual(p.orig, { src: '10.137.0.7', dst: '203.0.113.80', icmpType: 8, icmpCode: 0, icmpId: 4242 });
  assert.equal(parseConntrackLine(6, V6_PING)!.orig.icmpType, 128);
  const list = parseConntrackList(4, ['conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.', '', TCP_1500, 'garbage', 'tcp 6 1 src=1.2.3.999 dst=1.2.3.4', UDP_DNS_DNAT].join('\n'));
  assert.equal(list.length, 2);
});

test('ports are compared as numbers: 100-200 does not contain 1500 (upstream thought it did)', () => {
  const r = rules(V4, { policy: 'drop', '0000': 'action=accept proto=tcp dstports=100-200' });
  assert.equal(isBlocked(r, parseConntrackLine(4, TCP_1500)!, []), true);
  assert.equal(isBlocked(r, parseConntrackLine(4, TCP_150)!, []), false);
});

test('first matching rule decides; no rule left means blocked', () => {
  const conns = parseConntrackList(4, [TCP_1500, TCP_150, UDP_DNS_DNAT, PING, OTHER_SRC].join('\n'));
  const r = rules(V4, {
    policy: 'drop',
    '0000': 'action=drop proto=tcp dstports=150-150',
    '0001': 'action=accept dst4=203.0.113.0/24',
    '0002': 'action=accept specialtarget=dns',
  });
  // tcp/150 dropped by 0000; tcp/1500 and ping accepted by 0001; DNS accepted by 0002 (its
  // post-DNAT destination is a server in resolv.conf); another qube's flow is not ours.
  assert.deepEqual(forbiddenConnections(r, '10.137.0.7', conns, ['192.0.2.53']).map((c) => c.orig.dport), [150]);
  // With different resolvers the DNS flow is no longer allowed.
  assert.deepEqual(forbiddenConnections(r, '10.137.0.7', conns, ['192.0.2.54']).map((c) => c.orig.dport).sort(), [150, 53]);
  // Drop-all cuts everything of this qube, ICMP included.
  assert.equal(forbiddenConnections(rules(V4, { policy: 'drop' }), '10.137.0.7', conns, []).length, 4);
  // icmptype rules judge ICMP flows by their request type.
  const pingOnly = rules(V4, { policy: 'drop', '0000': 'action=accept proto=icmp icmptype=8' });
  assert.deepEqual(forbiddenConnections(pingOnly, '10.137.0.7', conns, []).map((c) => c.protoName).sort(), ['tcp', 'tcp', 'udp']);
  // dsthost rules use the resolved set.
  const host = rules(V4, { policy: 'drop', '0000': 'action=accept dsthost=web.test proto=tcp' }, { 'web.test': { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 60 } });
  assert.deepEqual(forbiddenConnections(host, '10.137.0.7', conns, []).map((c) => c.protoName).sort(), ['icmp', 'udp']);
});

test('IPv6 flows', () => {
  const conns = parseConntrackList(6, [V6_TCP, V6_PING].join('\n'));
  const r = rules(V6, { policy: 'drop', '0000': 'action=accept dst6=2001:db8::/32 proto=tcp dstports=4000-5000' });
  assert.deepEqual(forbiddenConnections(r, V6.addr, conns, []).map((c) => c.protoName), ['ipv6-icmp']);
  assert.equal(cidrContains({ family: 6, addr: '2001:db8::', prefix: 32 }, 6, '2001:db8:ffff::1'), true);
  assert.equal(cidrContains({ family: 6, addr: '2001:db8::', prefix: 32 }, 6, '2001:db9::1'), false);
  assert.equal(cidrContains({ family: 4, addr: '0.0.0.0', prefix: 0 }, 4, '255.255.255.255'), true);
});

test('deletion arguments name exactly one entry by its original tuple', () => {
  assert.deepEqual(conntrackDeleteArgs(parseConntrackLine(4, TCP_150)!), ['-D', '-f', 'ipv4', '-s', '10.137.0.7', '-d', '203.0.113.80', '-p', 'tcp', '--sport', '41236', '--dport', '150']);
  assert.deepEqual(conntrackDeleteArgs(parseConntrackLine(4, UDP_DNS_DNAT)!), ['-D', '-f', 'ipv4', '-s', '10.137.0.7', '-d', '10.139.1.1', '-p', 'udp', '--sport', '5353', '--dport', '53']);
  assert.deepEqual(conntrackDeleteArgs(parseConntrackLine(4, PING)!), ['-D', '-f', 'ipv4', '-s', '10.137.0.7', '-d', '203.0.113.80', '-p', 'icmp', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '4242']);
  assert.deepEqual(conntrackDeleteArgs(parseConntrackLine(6, V6_PING)!), ['-D', '-f', 'ipv6', '-s', 'fd09:24ef:4179::a89:7', '-d', '2001:db8::80', '-p', 'icmpv6', '--icmpv6-type', '128', '--icmpv6-code', '0', '--icmpv6-id', '7']);
});
