// The rule parser over upstream's documented examples and every error class.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRule, parseQubeEntries, parseTarget, markerTarget, parseCidr, type RuleErrorKind, type Target } from '@qubes-net/firewall';

const V4: Target = { addr: '10.137.0.7', family: 4 };
const V6: Target = { addr: 'fd09:24ef:4179::a89:7', family: 6 };

function ok(value: string, family: 4 | 6 = 4) {
  const r = parseRule('0000', value, family);
  assert.ok(r.ok, `${value}: ${JSON.stringify(!r.ok && r.errors)}`);
  return r.rule;
}

function kinds(value: string, family: 4 | 6 = 4): RuleErrorKind[] {
  const r = parseRule('0000', value, family);
  assert.ok(!r.ok, `${JSON.stringify(value)} should be rejected`);
  return r.errors.map((e) => e.kind);
}

test("upstream's documented rule examples parse to their meaning", () => {
  assert.deepEqual(ok('action=drop proto=icmp'), { key: '0000', action: 'drop', proto: 'icmp' });
  assert.deepEqual(ok('action=drop proto=tcp dstports=80-80'), { key: '0000', action: 'drop', proto: 'tcp', ports: { lo: 80, hi: 80 } });
  assert.deepEqual(ok('action=accept proto=udp'), { key: '0000', action: 'accept', proto: 'udp' });
  assert.deepEqual(ok('action=accept specialtarget=dns'), { key: '0000', action: 'accept', dns: true });
  assert.deepEqual(ok('action=accept dst4=1.2.3.0/24 proto=tcp dstports=80-80'), {
    key: '0000', action: 'accept', proto: 'tcp', ports: { lo: 80, hi: 80 }, dst: { kind: 'cidr', cidr: { family: 4, addr: '1.2.3.0', prefix: 24 } },
  });
  assert.deepEqual(ok('action=accept'), { key: '0000', action: 'accept' });
});

test('every option and value domain', () => {
  assert.deepEqual(ok('action=accept dsthost=www.example.test proto=tcp dstports=443-443').dst, { kind: 'host', name: 'www.example.test' });
  assert.deepEqual(ok('action=accept dsthost=example.test.').dst, { kind: 'host', name: 'example.test.' });
  assert.equal(ok('action=accept proto=icmp icmptype=8').icmpType, 8);
  assert.equal(ok('action=accept proto=icmp icmptype=0').icmpType, 0);
  assert.equal(ok('action=accept proto=icmp icmptype=255').icmpType, 255);
  assert.deepEqual(ok('action=accept dstports=0-65535').ports, { lo: 0, hi: 65535 });
  assert.deepEqual(ok('action=accept dst6=fd00::/8', 6).dst, { kind: 'cidr', cidr: { family: 6, addr: 'fd00::', prefix: 8 } });
  assert.deepEqual(ok('action=accept dst6=FD00:0:0::1', 6).dst, { kind: 'cidr', cidr: { family: 6, addr: 'fd00::1', prefix: 128 } });
  // A bare address is a single host; host bits beyond the prefix are cleared.
  assert.deepEqual(parseCidr(4, '192.168.1.1'), { family: 4, addr: '192.168.1.1', prefix: 32 });
  assert.deepEqual(parseCidr(4, '10.1.2.3/8'), { family: 4, addr: '10.0.0.0', prefix: 8 });
  assert.deepEqual(parseCidr(4, '10.1.2.3/0'), { family: 4, addr: '0.0.0.0', prefix: 0 });
  assert.deepEqual(parseCidr(6, 'fd09:24ef:4179::a89:7/64'), { family: 6, addr: 'fd09:24ef:4179::', prefix: 64 });
  assert.deepEqual(parseCidr(6, 'fd09:ffff::/17'), { family: 6, addr: 'fd09:8000::', prefix: 17 });
  // dsthost goes into both families; specialtarget with a destination means both.
  assert.ok(ok('action=accept dsthost=a.test', 6));
  assert.deepEqual(ok('action=accept dst4=10.0.0.0/8 specialtarget=dns').dns, true);
});

test('every malformed rule is a typed error', () => {
  assert.deepEqual(kinds(''), ['empty-rule']);
  assert.deepEqual(kinds('action=accept\u0000'), ['garbage']);
  assert.deepEqual(kinds('action=accept proto=tcp\n'), ['garbage']);
  assert.deepEqual(kinds('action=accept dsthost=bücher.test'), ['garbage']);
  assert.deepEqual(kinds('action=accept  proto=tcp'), ['empty-token']);
  assert.deepEqual(kinds(' action=accept'), ['empty-token']);
  assert.deepEqual(kinds('action=accept '), ['empty-token']);
  assert.deepEqual(kinds('action=accept tcp'), ['token-without-equals']);
  assert.deepEqual(kinds('action=accept expire=123'), ['unknown-option']);
  assert.deepEqual(kinds('action=accept comment=hi'), ['unknown-option']);
  assert.deepEqual(kinds('action=accept =x'), ['unknown-option']);
  assert.deepEqual(kinds('action=accept proto=tcp proto=udp'), ['duplicate-option']);
  assert.deepEqual(kinds('proto=tcp'), ['missing-action']);
  assert.deepEqual(kinds('action=reject'), ['bad-action']);
  assert.deepEqual(kinds('action=ACCEPT'), ['bad-action']);
  assert.deepEqual(kinds('action=accept proto=sctp'), ['bad-proto']);
  for (const bad of ['1.2.3.0/33', '1.2.3/24', '1.2.3.4/', '1.2.3.4/024', '01.2.3.4', 'fd00::/8', '1.2.3.4/-1', '1.2.3.4/8/8']) {
    assert.deepEqual(kinds(`action=accept dst4=${bad}`), ['bad-cidr'], bad);
  }
  for (const bad of ['fd00::/129', '1.2.3.4', 'fd00::1%eth0', 'gggg::1', 'fd00::/']) assert.deepEqual(kinds(`action=accept dst6=${bad}`, 6), ['bad-cidr'], bad);
  for (const bad of ['', 'Example.test', 'a..b', '.a', 'a b', 'a/b', 'x'.repeat(64) + '.test', 'a;b', 'a$(x)']) {
    const v = `action=accept dsthost=${bad}`;
    const k = kinds(v);
    assert.ok(k.includes('bad-hostname') || k.includes('token-without-equals') || k.includes('empty-token'), `${bad}: ${k}`);
  }
  for (const bad of ['80', '80-', '-80', 'a-b', '080-80', '80-80-80', '1e3-2e3', '']) assert.deepEqual(kinds(`action=accept proto=tcp dstports=${bad}`), ['bad-ports'], bad);
  assert.deepEqual(kinds('action=accept proto=tcp dstports=90-80'), ['ports-reversed']);
  assert.deepEqual(kinds('action=accept proto=tcp dstports=80-65536'), ['port-out-of-range']);
  assert.deepEqual(kinds('action=accept proto=tcp dstports=99999999-99999999'), ['port-out-of-range']);
  assert.deepEqual(kinds('action=accept proto=icmp dstports=80-80'), ['ports-without-tcp-udp']);
  assert.deepEqual(kinds('action=accept proto=icmp specialtarget=dns'), ['ports-without-tcp-udp']);
  assert.deepEqual(kinds('action=accept proto=icmp icmptype=256'), ['bad-icmptype']);
  assert.deepEqual(kinds('action=accept proto=icmp icmptype=08'), ['bad-icmptype']);
  assert.deepEqual(kinds('action=accept proto=tcp icmptype=8'), ['icmptype-without-icmp']);
  assert.deepEqual(kinds('action=accept icmptype=8'), ['icmptype-without-icmp']);
  assert.deepEqual(kinds('action=accept specialtarget=ntp'), ['bad-specialtarget']);
  assert.deepEqual(kinds('action=accept dst4=1.2.3.4', 6), ['family-mismatch']);
  assert.deepEqual(kinds('action=accept dst6=fd00::1', 4), ['family-mismatch']);
  assert.deepEqual(kinds('action=accept dst4=1.2.3.4 dsthost=a.test'), ['conflicting-destinations']);
  // Several problems in one rule are all reported.
  assert.deepEqual(kinds('action=maybe proto=x dstports=9-1 foo'), ['token-without-equals', 'bad-action', 'bad-proto', 'ports-reversed']);
});

test('errors name the key and carry a shortened value', () => {
  const r = parseRule('0042', `action=accept dsthost=${'a'.repeat(3000)}`, 4);
  assert.ok(!r.ok);
  assert.equal(r.errors[0]!.key, '0042');
  assert.ok(r.errors[0]!.value!.length < 200);
});

function entries(target: Target, rules: Record<string, string>): Map<string, string> {
  return new Map(Object.entries(rules).map(([k, v]) => [`/qubes-firewall/${target.addr}/${k}`, v]));
}

test('a qube: rules in key order (gaps allowed), then the policy as the last rule', () => {
  const p = parseQubeEntries(V4, entries(V4, { policy: 'drop', '0002': 'action=accept proto=udp', '0000': 'action=accept proto=icmp', '0010': 'action=drop proto=tcp' }));
  assert.ok(p.ok);
  assert.deepEqual(p.rules.map((r) => [r.key, r.action, r.proto]), [['0000', 'accept', 'icmp'], ['0002', 'accept', 'udp'], ['0010', 'drop', 'tcp'], ['policy', 'drop', undefined]]);
  // Upstream's default firewall.
  const d = parseQubeEntries(V6, entries(V6, { policy: 'drop', '0000': 'action=accept' }));
  assert.ok(d.ok);
  assert.deepEqual(d.rules.map((r) => r.action), ['accept', 'drop']);
  // Only a policy.
  const only = parseQubeEntries(V4, entries(V4, { policy: 'accept' }));
  assert.ok(only.ok && only.rules.length === 1);
});

test('a qube with one bad rule, a bad policy, a missing policy or a stray key is an error as a whole', () => {
  const bad = parseQubeEntries(V4, entries(V4, { policy: 'drop', '0000': 'action=accept', '0001': 'action=accept x' }));
  assert.ok(!bad.ok);
  assert.deepEqual(bad.errors.map((e) => [e.key, e.kind]), [['0001', 'token-without-equals']]);
  const noPolicy = parseQubeEntries(V4, entries(V4, { '0000': 'action=accept' }));
  assert.ok(!noPolicy.ok && noPolicy.errors.some((e) => e.kind === 'missing-policy'));
  const badPolicy = parseQubeEntries(V4, entries(V4, { policy: 'reject' }));
  assert.ok(!badPolicy.ok && badPolicy.errors.some((e) => e.kind === 'bad-policy'));
  for (const key of ['000', '00000', 'abcd', '0000/x', 'Policy', '１２３４']) {
    const p = parseQubeEntries(V4, entries(V4, { policy: 'drop', [key]: 'action=accept' }));
    assert.ok(!p.ok && p.errors.some((e) => e.kind === 'bad-key'), key);
  }
  const outside = parseQubeEntries(V4, new Map([['/qubes-firewall/10.137.0.8/policy', 'drop']]));
  assert.ok(!outside.ok && outside.errors.some((e) => e.kind === 'bad-key'));
});

test('target addresses: canonical IPv4/IPv6 only; markers are exactly /qubes-firewall/<x>', () => {
  assert.deepEqual(parseTarget('10.137.0.7'), V4);
  assert.deepEqual(parseTarget('fd09:24ef:4179::a89:7'), V6);
  for (const bad of ['010.137.0.7', 'FD09::1', 'fd09:0::1', '10.137.0.7/32', '', 'x', '10.137.0.7 ']) assert.equal(parseTarget(bad), undefined, bad);
  assert.equal(markerTarget('/qubes-firewall/10.137.0.7'), '10.137.0.7');
  assert.equal(markerTarget('/qubes-firewall/10.137.0.7/policy'), undefined);
  assert.equal(markerTarget('/qubes-firewall/10.137.0.7/'), undefined);
  assert.equal(markerTarget('/qubes-firewall/'), undefined);
  assert.equal(markerTarget('/connected-ips'), undefined);
});
