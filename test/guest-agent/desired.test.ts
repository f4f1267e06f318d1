// Desired state as a pure function of the validated config (reference §3.3, Appendix A).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desiredUplink, ipv6Network, parseUplinkConfig, resolvConfContent, type ConfigOutcome } from '@qubes-net/guest-agent';
import { APPENDIX_A } from './fixtures.js';

const outcome = (over: Record<string, string | undefined> = {}): ConfigOutcome => {
  const keys = new Map(Object.entries({ ...APPENDIX_A, ...over }).filter((e): e is [string, string] => e[1] !== undefined));
  return parseUplinkConfig(keys, '00:16:3e:5e:6c:00');
};

test('Appendix A: addresses, neighbours, group 1 up, host + default routes, two nameservers', () => {
  const d = desiredUplink('eth0', outcome(), { ipv6: true });
  assert.equal(d.link, 'up');
  assert.deepEqual(d.addresses, [
    { family: 4, local: '10.137.0.7', prefixlen: 32 },
    { family: 6, local: 'fd09:24ef:4179::a89:7', prefixlen: 128 },
  ]);
  assert.deepEqual(d.neighbours, [
    { family: 4, dst: '10.137.0.3', lladdr: 'fe:ff:ff:ff:ff:ff' },
    { family: 6, dst: 'fd09:24ef:4179::a89:3', lladdr: 'fe:ff:ff:ff:ff:ff' },
  ]);
  assert.deepEqual(d.routes, [
    { family: 4, dst: '10.137.0.3', onlink: false, scopeLink: true },
    { family: 6, dst: 'fd09:24ef:4179::a89:3', onlink: false, scopeLink: true },
    { family: 4, dst: 'default', gateway: '10.137.0.3', onlink: true, scopeLink: false },
    { family: 6, dst: 'default', gateway: 'fd09:24ef:4179::a89:3', onlink: true, scopeLink: false },
  ]);
  assert.deepEqual(d.resolvConf, { action: 'write', content: 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n' });
});

test('an fe80: gateway6 gets its neighbour and default route but no host route', () => {
  const d = desiredUplink('eth0', outcome({ '/qubes-gateway6': 'fe80::fcff:ffff:feff:ffff' }), { ipv6: true });
  assert.deepEqual(d.routes.filter((r) => r.family === 6), [{ family: 6, dst: 'default', gateway: 'fe80::fcff:ffff:feff:ffff', onlink: true, scopeLink: false }]);
  assert.ok(d.neighbours.some((n) => n.dst === 'fe80::fcff:ffff:feff:ffff'));
});

test('the IPv6 gateway route uses netmask6 (network address, as the kernel wants it)', () => {
  const d = desiredUplink('eth0', outcome({ '/qubes-netmask6': '64' }), { ipv6: true });
  assert.ok(d.routes.some((r) => r.family === 6 && r.dst === 'fd09:24ef:4179::/64'));
  assert.deepEqual(d.addresses[1], { family: 6, local: 'fd09:24ef:4179::a89:7', prefixlen: 64 });
  assert.equal(ipv6Network('fd09:24ef:4179:1:2:3:a89:7', 64), 'fd09:24ef:4179:1::');
  assert.equal(ipv6Network('fd09:24ef:4179::a89:7', 120), 'fd09:24ef:4179::a89:0');
  assert.equal(ipv6Network('fd09:24ef:4179::a89:7', 0), '::');
});

test('disable-default-route: host routes only', () => {
  const d = desiredUplink('eth0', outcome({ '/qubes-service/disable-default-route': '1' }), { ipv6: true });
  assert.deepEqual(d.routes.map((r) => r.dst), ['10.137.0.3', 'fd09:24ef:4179::a89:3']);
});

test('disable-dns-server: resolv.conf emptied to one empty line, as upstream does', () => {
  const d = desiredUplink('eth0', outcome({ '/qubes-service/disable-dns-server': '1' }), { ipv6: true });
  assert.deepEqual(d.resolvConf, { action: 'write', content: '\n' });
});

test('resolv.conf: primary defaults to the gateway, no empty nameserver line', () => {
  const d = desiredUplink('eth0', outcome({ '/qubes-primary-dns': undefined, '/qubes-secondary-dns': undefined }), { ipv6: true });
  assert.deepEqual(d.resolvConf, { action: 'write', content: 'nameserver 10.137.0.3\n' });
  assert.equal(resolvConfContent([]), '');
});

test('IPv6 not usable on the link: IPv4 only', () => {
  const d = desiredUplink('eth0', outcome(), { ipv6: false });
  assert.deepEqual(d.addresses.map((a) => a.family), [4]);
  assert.ok(d.routes.every((r) => r.family === 4));
  assert.ok(d.neighbours.every((n) => n.family === 4));
});

test('custom net-config: no permanent neighbours', () => {
  const mac = '00:16:3e:5e:6c:00';
  const keys = new Map(Object.entries({ [`/net-config/${mac}/ip`]: '192.168.1.5', [`/net-config/${mac}/gateway`]: '192.168.1.1', [`/net-config/${mac}/custom`]: '1' }));
  const d = desiredUplink('eth0', parseUplinkConfig(keys, mac), { ipv6: true });
  assert.deepEqual(d.neighbours, []);
  assert.deepEqual(d.routes.map((r) => r.dst), ['192.168.1.1', 'default']);
});

test('invalid or missing config: nothing of ours, link down, resolv.conf untouched', () => {
  for (const o of [outcome({ '/qubes-ip': 'garbage' }), outcome({ '/qubes-ip': undefined })]) {
    const d = desiredUplink('eth0', o, { ipv6: true });
    assert.deepEqual({ link: d.link, a: d.addresses, n: d.neighbours, r: d.routes, dns: d.resolvConf.action }, { link: 'down', a: [], n: [], r: [], dns: 'leave' });
  }
});
