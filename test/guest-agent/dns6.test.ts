// IPv6 virtual DNS in the client's resolv.conf (issue 14): after the IPv4 servers, only when
// IPv6 is on, the keys validated like every other address, and watched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desiredUplink, parseUplinkConfig, WATCHED_PATHS, type ConfigOutcome } from '@qubes-net/guest-agent';
import { APPENDIX_A } from './fixtures.js';

const DNS6 = { '/qubes-primary-dns6': 'fd09:24ef:4179::a8b:1', '/qubes-secondary-dns6': 'fd09:24ef:4179::a8b:2' };
const outcome = (over: Record<string, string | undefined> = {}): ConfigOutcome => {
  const keys = new Map(Object.entries({ ...APPENDIX_A, ...over }).filter((e): e is [string, string] => e[1] !== undefined));
  return parseUplinkConfig(keys, '00:16:3e:5e:6c:00');
};
const resolv = (o: ConfigOutcome, ipv6: boolean) => {
  const r = desiredUplink('eth0', o, { ipv6 }).resolvConf;
  return r.action === 'write' ? r.content : undefined;
};

test('IPv6 on and the keys present: the IPv6 virtual servers after the IPv4 ones', () => {
  assert.equal(resolv(outcome(DNS6), true), 'nameserver 10.139.1.1\nnameserver 10.139.1.2\nnameserver fd09:24ef:4179::a8b:1\nnameserver fd09:24ef:4179::a8b:2\n');
});

test('IPv6 not usable, no IPv6 address, or no keys (today\'s dom0): IPv4 servers only', () => {
  const v4only = 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n';
  assert.equal(resolv(outcome(DNS6), false), v4only);
  assert.equal(resolv(outcome({ ...DNS6, '/qubes-ip6': undefined, '/qubes-gateway6': undefined }), true), v4only);
  assert.equal(resolv(outcome(), true), v4only);
});

test('a bad IPv6 DNS key is refused like other bad input; ignored without an IPv6 address', () => {
  const bad = outcome({ '/qubes-primary-dns6': 'ff02::1' });
  assert.equal(bad.kind, 'invalid');
  assert.ok(bad.kind === 'invalid' && bad.issues.some((i) => i.key === '/qubes-primary-dns6'));
  assert.equal(outcome({ '/qubes-primary-dns6': 'nonsense', '/qubes-ip6': undefined }).kind, 'ok');
  const dup = outcome({ '/qubes-primary-dns6': 'fd09:24ef:4179::a8b:1', '/qubes-secondary-dns6': 'fd09:24ef:4179:0::a8b:1' });
  assert.equal(dup.kind === 'ok' && dup.config.dns6.length, 1, 'the same address once');
});

test('the watcher follows the IPv6 DNS keys', () => {
  assert.ok(WATCHED_PATHS.includes('/qubes-primary-dns6'));
  assert.ok(WATCHED_PATHS.includes('/qubes-secondary-dns6'));
});
