// resolv.conf parsing and the name lookup: the system resolver's answers (through a stand-in
// getaddrinfo, and /etc/hosts for real), failure paths and time limits (the success path,
// NXDOMAIN and AAAA lookups against dnsmasq run in firewall.netns.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { parseResolvConf, resolveHost, refreshDelayMs, DEFAULT_RESOLVE } from '@qubes-net/firewall';

test('resolv.conf: well-formed nameserver lines only, both families, no duplicates', () => {
  const text = [
    '# generated',
    'nameserver 10.139.1.1',
    'nameserver 10.139.1.1',
    'nameserver   2001:DB8::53   ',
    'nameserver fe80::1%eth0',
    'nameserver 10.139.1.300',
    'nameserver 192.0.2.53 # comment',
    'nameserver',
    'search example.test',
    'options ndots:1',
    'nameserver 1.2.3.4 5.6.7.8',
  ].join('\n');
  assert.deepEqual(parseResolvConf(text), { v4: ['10.139.1.1', '192.0.2.53'], v6: ['2001:db8::53'] });
  assert.deepEqual(parseResolvConf(''), { v4: [], v6: [] });
  assert.deepEqual(parseResolvConf('\u0000\u00ff garbage'), { v4: [], v6: [] });
});

test('lookups: address literals need no server; a silent server is a timeout value, not a hang', async (t) => {
  assert.deepEqual(await resolveHost('203.0.113.80', 4, []), { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 86400 });
  assert.deepEqual(await resolveHost('203.0.113.80', 6, []), { ok: true, addrs: [], ttlSeconds: 86400 });
  assert.deepEqual(await resolveHost('example.test', 4, [], { ...DEFAULT_RESOLVE, via: 'direct' }), { ok: false, error: 'no nameserver in resolv.conf' });
  // A server that never answers: the lookup ends with a timeout, it does not hang.
  const silent = createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  t.after(() => silent.close());
  const port = silent.address().port;
  assert.deepEqual(await resolveHost('example.test', 4, [`127.0.0.1:${port}`], { timeoutMs: 150, tries: 1, via: 'direct' }), { ok: false, error: 'timeout' });
  // Through the system resolver, the silent server only costs the TTL: the name comes from getaddrinfo.
  const viaSystem = await resolveHost('web.test', 4, [`127.0.0.1:${port}`], { timeoutMs: 150, tries: 1, lookup: async () => [{ address: '203.0.113.80', family: 4 }] });
  assert.deepEqual(viaSystem, { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 });
});

test('16.7: dsthost goes through the system resolver (getaddrinfo): /etc/hosts answers without any DNS server', async () => {
  // "localhost" is in every /etc/hosts; nsswitch's "files" answers it. Asking resolv.conf's
  // servers directly (what we did before) would fail here: there is none.
  assert.deepEqual(await resolveHost('localhost', 4, []), { ok: true, addrs: ['127.0.0.1'], ttlSeconds: 300 });
});

test('16.7: system lookups: dedup, family filter, "exists without this family" vs "no such name", timeout, failure codes', async () => {
  const answers: Record<string, { address: string; family: number }[]> = {
    'dual.test': [{ address: '203.0.113.80', family: 4 }, { address: '203.0.113.80', family: 4 }, { address: '2001:db8::80', family: 6 }],
    'v4only.test': [{ address: '203.0.113.81', family: 4 }],
  };
  const calls: string[] = [];
  const lookup = async (host: string, family: 0 | 4 | 6) => {
    calls.push(`${family} ${host}`);
    if (host === 'hang.test') return new Promise<never>(() => undefined);
    if (host === 'again.test') throw Object.assign(new Error('getaddrinfo EAI_AGAIN again.test'), { code: 'EAI_AGAIN' });
    const found = (answers[host] ?? []).filter((a) => family === 0 || a.family === family);
    if (!found.length) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return found;
  };
  const opts = { timeoutMs: 100, tries: 1, lookup };
  assert.deepEqual(await resolveHost('dual.test', 4, [], opts), { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 });
  assert.deepEqual(await resolveHost('dual.test', 6, [], opts), { ok: true, addrs: ['2001:db8::80'], ttlSeconds: 300 });
  assert.deepEqual(await resolveHost('v4only.test', 6, [], opts), { ok: true, addrs: [], ttlSeconds: 300 });
  assert.deepEqual(await resolveHost('gone.test', 4, [], opts), { ok: false, error: 'no such name' });
  assert.deepEqual(await resolveHost('again.test', 4, [], opts), { ok: false, error: 'temporary failure' });
  assert.deepEqual(await resolveHost('hang.test', 4, [], opts), { ok: false, error: 'timeout' });
  assert.ok(calls.includes('0 v4only.test') && calls.includes('0 gone.test'));
});

test('refresh delays: shortest TTL, within bounds; failures retried soon; no names, no timer', () => {
  const bounds = { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000 };
  assert.equal(refreshDelayMs([], bounds), undefined);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 300 }, { ok: true, addrs: [], ttlSeconds: 60 }], bounds), 60_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 0 }], bounds), 10_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 604_800 }], bounds), 3_600_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 3600 }, { ok: false, error: 'timeout' }], bounds), 30_000);
});
