// The DNS mapping per family (pure): IPv6 virtual DNS, reject when a family has no server,
// local resolvers (issue 16.1), systemd-resolved's IPv6 entries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NftTransaction } from '@qubes-net/common/kernel';
import { computeDnsMapping, parseResolvedDns, allUpstream, addDnsChain, describeDnsRules6, isVirtualDns6, parseProviderConfig, PROVIDER_KEYS } from '@qubes-net/driver-agent';

const V4 = ['10.139.1.1', '10.139.1.2'];
const V6 = ['fd09:24ef:4179::a8b:1', 'fd09:24ef:4179::a8b:2'];
const base = { virtualDns: V4, ownAddresses: new Set(['192.0.2.2', '2001:db8:0:1::2', '127.0.0.1', '::1']), behindQubesProvider: false };

test('IPv6 virtual servers pair cyclically with the IPv6 servers, IPv4 with IPv4', () => {
  const { mapping } = computeDnsMapping({ ...base, servers4: ['198.51.100.53'], virtualDns6: V6, servers6: ['2001:db8:53::53', '2001:db8:53::54', '2001:db8:53::55'] });
  assert.deepEqual(mapping.pairs, [{ virtual: V4[0], target: '198.51.100.53' }, { virtual: V4[1], target: '198.51.100.53' }]);
  assert.equal(mapping.ipv6?.mode, 'dnat');
  assert.deepEqual(mapping.ipv6?.pairs.map((p) => p.target), ['2001:db8:53::53', '2001:db8:53::54']);
  assert.deepEqual(allUpstream(mapping), ['198.51.100.53', '2001:db8:53::53', '2001:db8:53::54']);
});

test('a family without a usable server rejects (never drops); no IPv6 keys: nothing in the ip6 chain', () => {
  const only4 = computeDnsMapping({ ...base, servers4: ['198.51.100.53'], virtualDns6: V6, servers6: [] }).mapping;
  assert.equal(only4.ipv6?.mode, 'reject');
  assert.deepEqual(describeDnsRules6(only4), V6.flatMap((v) => [`${v} udp reject`, `${v} tcp reject`]));
  const text = new NftTransaction();
  addDnsChain(text, only4);
  assert.match(text.render(), /ip6 daddr fd09:24ef:4179::a8b:1 udp dport 53 counter reject\n/);
  assert.match(text.render(), /ip6 daddr fd09:24ef:4179::a8b:1 tcp dport 53 counter reject with tcp reset/);
  const only6 = computeDnsMapping({ ...base, servers4: [], virtualDns6: V6, servers6: ['2001:db8:53::53'] }).mapping;
  assert.equal(only6.mode, 'reject');
  assert.equal(only6.ipv6?.mode, 'dnat');
  const noKeys = computeDnsMapping({ ...base, servers4: ['198.51.100.53'], virtualDns6: [], servers6: ['2001:db8:53::53'] }).mapping;
  assert.equal(noKeys.ipv6?.mode, 'none');
  assert.deepEqual(describeDnsRules6(noKeys), []);
  assert.equal(computeDnsMapping({ ...base, servers4: [] }).mapping.ipv6, undefined, 'no IPv6 in the kernel: no IPv6 part');
});

test('local resolvers: loopback (route_localnet wanted) and own addresses are targets; ::1 and link-local are not', () => {
  const lo = computeDnsMapping({ ...base, servers4: ['127.0.0.1'], virtualDns6: V6, servers6: ['::1'] });
  assert.equal(lo.mapping.mode, 'dnat');
  assert.equal(lo.mapping.localnet, true);
  assert.equal(lo.mapping.ipv6?.mode, 'reject');
  assert.match(lo.rejected.find((r) => r.server === '::1')!.reason, /IPv6 loopback/);
  const own = computeDnsMapping({ ...base, servers4: ['192.0.2.2'], virtualDns6: V6, servers6: ['2001:db8:0:1::2', 'fe80::1'] });
  assert.deepEqual(own.mapping.pairs.map((p) => p.target), ['192.0.2.2', '192.0.2.2']);
  assert.equal(own.mapping.localnet, undefined);
  assert.deepEqual(own.mapping.ipv6?.upstream, ['2001:db8:0:1::2']);
  assert.ok(own.rejected.some((r) => r.server === 'fe80::1'));
});

test('a virtual address is never a target: a ProxyVM forwards, anything else rejects', () => {
  const proxy = computeDnsMapping({ ...base, behindQubesProvider: true, servers4: V4, virtualDns6: V6, servers6: V6 }).mapping;
  assert.equal(proxy.mode, 'forward');
  assert.equal(proxy.ipv6?.mode, 'forward');
  const alone = computeDnsMapping({ ...base, servers4: V4, virtualDns6: V6, servers6: V6 }).mapping;
  assert.equal(alone.mode, 'reject');
  assert.equal(alone.ipv6?.mode, 'reject');
  assert.ok(isVirtualDns6('fd09:24ef:4179::a8b:9'));
  assert.ok(!isVirtualDns6('fd09:24ef:4179::a89:1'));
});

test('provider keys: /qubes-netvm-*-dns6 validated (no link-local, multicast, garbage)', () => {
  const raw = (p: string | undefined, s: string | undefined) => new Map([[PROVIDER_KEYS.gateway, '10.137.0.2'], [PROVIDER_KEYS.primaryDns6, p], [PROVIDER_KEYS.secondaryDns6, s]]);
  assert.deepEqual(parseProviderConfig(raw(V6[0], V6[1])).config.virtualDns6, V6);
  const bad = parseProviderConfig(raw('fe80::1', 'ff02::1; drop'));
  assert.deepEqual(bad.config.virtualDns6, []);
  assert.equal(bad.errors.length, 2);
  assert.deepEqual(parseProviderConfig(raw(undefined, undefined)).config.virtualDns6, []);
});

test('systemd-resolved: IPv6 entries (family 10) read too, global ones preferred', () => {
  const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0x53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];
  const r = parseResolvedDns(JSON.stringify({ type: 'a(iiay)', data: [[2, 10, v6], [0, 2, [198, 51, 100, 53]], [2, 10, [1, 2, 3]]] }));
  assert.deepEqual(r.servers4, ['198.51.100.53']);
  assert.deepEqual(r.servers6, ['2001:db8:53::53']);
  assert.equal(r.errors.length, 1);
});
