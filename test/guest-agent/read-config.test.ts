// The QubesDB reader: MemoryQubesDB stands in for the daemon (pure logic only; the real daemon
// and FFI client are used by the namespace tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryQubesDB } from '@qubes-net/qubesdb';
import { parseIPv4, parseIPv6 } from '@qubes-net/common';
import { parseUplinkConfig, readUplinkKeys, chooseUplink, type ConfigOutcome, type LinkState } from '@qubes-net/guest-agent';
import { APPENDIX_A } from './fixtures.js';

const MAC = '00:16:3e:5e:6c:00';


async function outcomeOf(keys: Record<string, string>, mac: string | undefined = MAC): Promise<ConfigOutcome> {
  const db = new MemoryQubesDB(keys);
  return parseUplinkConfig(await readUplinkKeys(db), mac);
}

function ok(o: ConfigOutcome) {
  assert.equal(o.kind, 'ok', JSON.stringify(o));
  return (o as ConfigOutcome & { kind: 'ok' }).config;
}

test('Appendix A keys give the full dual-stack config', async () => {
  const c = ok(await outcomeOf(APPENDIX_A));
  assert.deepEqual(c, {
    layout: 'qubes', custom: false, ip: '10.137.0.7', prefix: 32, gateway: '10.137.0.3',
    ip6: 'fd09:24ef:4179::a89:7', prefix6: 128, gateway6: 'fd09:24ef:4179::a89:3',
    dns: ['10.139.1.1', '10.139.1.2'], dns6: [], disableDefaultRoute: false, disableDnsServer: false,
  });
});

test('defaults: netmask /32, netmask6 128, primary DNS falls back to the gateway, no empty secondary', async () => {
  const c = ok(await outcomeOf({ '/qubes-ip': '10.137.0.9', '/qubes-gateway': '10.137.0.1', '/qubes-ip6': 'fd09::9' }));
  assert.equal(c.prefix, 32);
  assert.equal(c.prefix6, 128);
  assert.deepEqual(c.dns, ['10.137.0.1']);
  assert.equal(c.gateway6, undefined);
});

test('netmask may be dotted or a prefix length (net.fake-netmask)', async () => {
  assert.equal(ok(await outcomeOf({ ...APPENDIX_A, '/qubes-netmask': '255.255.255.0' })).prefix, 24);
  assert.equal(ok(await outcomeOf({ ...APPENDIX_A, '/qubes-netmask': '16' })).prefix, 16);
  assert.equal(ok(await outcomeOf({ ...APPENDIX_A, '/qubes-netmask6': '64' })).prefix6, 64);
});

test('IPv6 keys count only with an IPv6 address (gateway6 without ip6 is ignored)', async () => {
  const { '/qubes-ip6': _drop, ...noIp6 } = APPENDIX_A;
  const c = ok(await outcomeOf({ ...noIp6, '/qubes-netmask6': 'garbage' }));
  assert.equal(c.ip6, undefined);
  assert.equal(c.gateway6, undefined);
  // ipv6_just_appvm: an address but no gateway6
  const { '/qubes-gateway6': _g, ...noGw6 } = APPENDIX_A;
  const d = ok(await outcomeOf(noGw6));
  assert.equal(d.ip6, 'fd09:24ef:4179::a89:7');
  assert.equal(d.gateway6, undefined);
});

test('IPv6 values are canonicalised', async () => {
  const c = ok(await outcomeOf({ ...APPENDIX_A, '/qubes-ip6': 'FD09:24EF:4179:0000:0000:0000:0A89:0007' }));
  assert.equal(c.ip6, 'fd09:24ef:4179::a89:7');
});

test('services: only "1" switches disable-default-route / disable-dns-server on', async () => {
  const on = ok(await outcomeOf({ ...APPENDIX_A, '/qubes-service/disable-default-route': '1', '/qubes-service/disable-dns-server': '1' }));
  assert.equal(on.disableDefaultRoute, true);
  assert.equal(on.disableDnsServer, true);
  const off = ok(await outcomeOf({ ...APPENDIX_A, '/qubes-service/disable-default-route': '0', '/qubes-service/disable-dns-server': 'yes' }));
  assert.equal(off.disableDefaultRoute, false);
  assert.equal(off.disableDnsServer, false);
});

test('/qubes-netvm-network non-empty marks a provider', async () => {
  assert.equal((await outcomeOf({ ...APPENDIX_A, '/qubes-netvm-network': '10.137.0.7' })).providesNetwork, true);
  assert.equal((await outcomeOf({ ...APPENDIX_A, '/qubes-netvm-network': '' })).providesNetwork, false);
  assert.equal((await outcomeOf({})).providesNetwork, false);
});

test('per-interface layout /net-config/<MAC>/ wins over /qubes-, DNS still from /qubes-', async () => {
  const c = ok(await outcomeOf({
    ...APPENDIX_A,
    [`/net-config/${MAC}/ip`]: '192.168.5.2',
    [`/net-config/${MAC}/netmask`]: '255.255.255.0',
    [`/net-config/${MAC}/gateway`]: '192.168.5.1',
  }));
  assert.equal(c.layout, 'net-config');
  assert.equal(c.ip, '192.168.5.2');
  assert.equal(c.prefix, 24);
  assert.equal(c.gateway, '192.168.5.1');
  assert.equal(c.ip6, undefined, 'no /net-config/<MAC>/ip6: no IPv6, even though /qubes-ip6 exists');
  assert.deepEqual(c.dns, ['10.139.1.1', '10.139.1.2']);
  // another MAC's entries are not ours
  const other = ok(await outcomeOf({ ...APPENDIX_A, '/net-config/00:16:3e:00:00:01/ip': '192.168.9.9' }));
  assert.equal(other.ip, '10.137.0.7');
});

test('custom net-config: no gateway needed, flagged custom', async () => {
  const c = ok(await outcomeOf({ [`/net-config/${MAC}/ip`]: '192.168.5.2', [`/net-config/${MAC}/custom`]: '' }));
  assert.equal(c.custom, true);
  assert.equal(c.gateway, undefined);
  assert.deepEqual(c.dns, []);
});

test('no address at all: unconfigured (also when empty), whatever the rest holds', async () => {
  for (const keys of [{}, { '/qubes-ip': '' }, { '/qubes-gateway': 'garbage' }] as Record<string, string>[]) {
    const o = await outcomeOf(keys);
    assert.equal(o.kind, 'unconfigured', JSON.stringify(keys));
    if (o.kind === 'unconfigured') assert.equal(o.issue.key, '/qubes-ip');
  }
});

const HUGE = 'A'.repeat(3000);
const BAD_VALUES: [string, string, RegExp][] = [
  ['/qubes-ip', 'garbage', /not an IPv4 address/],
  ['/qubes-ip', 'fd09::7', /not an IPv4 address/],
  ['/qubes-ip', '-10.137.0.7', /not an IPv4 address/],
  ['/qubes-ip', '10.137.0.7; reboot', /not an IPv4 address/],
  ['/qubes-ip', '$(reboot)', /not an IPv4 address/],
  ['/qubes-ip', '10.137.0.7\n', /not an IPv4 address/],
  ['/qubes-ip', '010.137.0.7', /not an IPv4 address/],
  ['/qubes-ip', '224.0.0.1', /not a unicast/],
  ['/qubes-ip', '127.0.0.1', /not a unicast/],
  ['/qubes-ip', HUGE, /not an IPv4 address/],
  ['/qubes-netmask', '255.0.255.0', /netmask/],
  ['/qubes-netmask', '33', /netmask/],
  ['/qubes-netmask', '-24', /netmask/],
  ['/qubes-netmask', HUGE, /netmask/],
  ['/qubes-gateway', 'fd09::3', /gateway is not an IPv4/],
  ['/qubes-gateway', '10.137.0.3 dev lo', /gateway is not an IPv4/],
  ['/qubes-gateway', '-f', /gateway is not an IPv4/],
  ['/qubes-gateway', HUGE, /gateway is not an IPv4/],
  ['/qubes-primary-dns', '8.8.8.8`id`', /primary DNS/],
  ['/qubes-primary-dns', 'fd09::1', /primary DNS/],
  ['/qubes-secondary-dns', 'nameserver 1.1.1.1', /secondary DNS/],
  ['/qubes-secondary-dns', HUGE, /secondary DNS/],
  ['/qubes-ip6', '10.137.0.7', /not an IPv6 address/],
  ['/qubes-ip6', 'ff02::1', /not a unicast IPv6/],
  ['/qubes-ip6', 'fd09::7/64', /not an IPv6 address/],
  ['/qubes-ip6', HUGE, /not an IPv6 address/],
  ['/qubes-netmask6', '129', /prefix length/],
  ['/qubes-netmask6', 'ffff::', /prefix length/],
  ['/qubes-gateway6', '-fd09::3', /not an IPv6 address/],
  ['/qubes-gateway6', 'fd09::3%eth0', /not an IPv6 address/],
];

for (const [key, value, reason] of BAD_VALUES) {
  test(`bad ${key} = ${JSON.stringify(value.slice(0, 30))}${value.length > 30 ? '…' : ''} is rejected with the key named`, async () => {
    const o = await outcomeOf({ ...APPENDIX_A, [key]: value });
    assert.equal(o.kind, 'invalid');
    if (o.kind !== 'invalid') return;
    const issue = o.issues.find((i) => i.key === key);
    assert.ok(issue, `an issue for ${key}: ${JSON.stringify(o.issues)}`);
    assert.equal(issue.value, value);
    assert.match(issue.reason, reason);
  });
}

test('missing gateway is an error (not a half configuration)', async () => {
  const { '/qubes-gateway': _g, ...rest } = APPENDIX_A;
  const o = await outcomeOf(rest);
  assert.equal(o.kind, 'invalid');
  if (o.kind === 'invalid') assert.deepEqual(o.issues.map((i) => [i.key, i.reason]), [['/qubes-gateway', 'gateway is missing']]);
});

test('every bad value is reported, not just the first', async () => {
  const o = await outcomeOf({ ...APPENDIX_A, '/qubes-ip': 'x', '/qubes-gateway': 'y', '/qubes-ip6': 'z' });
  assert.equal(o.kind, 'invalid');
  if (o.kind === 'invalid') assert.deepEqual(o.issues.map((i) => i.key).sort(), ['/qubes-gateway', '/qubes-ip', '/qubes-ip6']);
});

test('property: whatever QubesDB holds, the parser never throws and lets only canonical addresses through', () => {
  const keyArb = fc.constantFrom('/qubes-ip', '/qubes-netmask', '/qubes-gateway', '/qubes-primary-dns', '/qubes-secondary-dns', '/qubes-ip6', '/qubes-netmask6', '/qubes-gateway6');
  const valueArb = fc.oneof(
    fc.string({ maxLength: 64 }),
    fc.ipV4(),
    fc.ipV6(),
    fc.ipV4().map((ip) => ` ${ip}`),
    fc.ipV4().map((ip) => `${ip};id`),
    fc.constantFrom('', '-', '--help', '1.2.3.4\n5.6.7.8', '::', '0.0.0.0', '255.255.255.255'),
  );
  fc.assert(fc.property(fc.dictionary(keyArb, valueArb), (overrides) => {
    const keys = new Map(Object.entries({ ...APPENDIX_A, ...overrides }));
    const o = parseUplinkConfig(keys, MAC);
    if (o.kind !== 'ok') return;
    const c = o.config;
    for (const v4 of [c.ip, c.gateway, ...c.dns]) if (v4 !== undefined) assert.equal(parseIPv4(v4), v4);
    for (const v6 of [c.ip6, c.gateway6]) if (v6 !== undefined) assert.equal(parseIPv6(v6), v6);
    assert.ok(Number.isInteger(c.prefix) && c.prefix >= 0 && c.prefix <= 32);
    assert.ok(Number.isInteger(c.prefix6) && c.prefix6 >= 0 && c.prefix6 <= 128);
  }), { numRuns: 500 });
});

const link = (ifname: string, mac: string): LinkState => ({ ifindex: 1, ifname, mac, up: true, group: 'default', addresses: [] });

test('uplink choice: MAC match, else eth0; an explicit interface wins; a bad /qubes-mac is reported', () => {
  const links = [link('lo', '00:00:00:00:00:00'), link('eth0', '00:16:3e:00:00:01'), link('eth1', MAC)];
  assert.deepEqual(chooseUplink(links, MAC), { ifname: 'eth1', by: 'mac' });
  assert.deepEqual(chooseUplink(links, '00:16:3e:99:99:99'), { ifname: 'eth0', by: 'fallback' });
  assert.deepEqual(chooseUplink(links, undefined), { ifname: 'eth0', by: 'fallback' });
  assert.deepEqual(chooseUplink(links, MAC, 'eth7'), { ifname: 'eth7', by: 'argument' });
  assert.deepEqual(chooseUplink(links, 'eth1; reboot'), { ifname: 'eth0', by: 'fallback', badMac: 'eth1; reboot' });
});
