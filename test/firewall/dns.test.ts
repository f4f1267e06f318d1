// resolv.conf parsing and the name lookup's failure paths (the success path, NXDOMAIN and
// AAAA lookups run against dnsmasq in firewall.netns.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { parseResolvConf, resolveHost, refreshDelayMs } from '@qubes-net/firewall';

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

test('lookups: address literals need no server; no server, or a silent one, is a failure value', async (t) => {
  assert.deepEqual(await resolveHost('203.0.113.80', 4, []), { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 86400 });
  assert.deepEqual(await resolveHost('203.0.113.80', 6, []), { ok: true, addrs: [], ttlSeconds: 86400 });
  assert.deepEqual(await resolveHost('example.test', 4, []), { ok: false, error: 'no nameserver in resolv.conf' });
  // A server that never answers: the lookup ends with a timeout, it does not hang.
  const silent = createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  t.after(() => silent.close());
  const port = silent.address().port;
  assert.deepEqual(await resolveHost('example.test', 4, [`127.0.0.1:${port}`], { timeoutMs: 150, tries: 1 }), { ok: false, error: 'timeout' });
});

test('refresh delays: shortest TTL, within bounds; failures retried soon; no names, no timer', () => {
  const bounds = { minMs: 10_000, maxMs: 3_600_000, retryMs: 30_000 };
  assert.equal(refreshDelayMs([], bounds), undefined);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 300 }, { ok: true, addrs: [], ttlSeconds: 60 }], bounds), 60_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 0 }], bounds), 10_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 604_800 }], bounds), 3_600_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['1.2.3.4'], ttlSeconds: 3600 }, { ok: false, error: 'timeout' }], bounds), 30_000);
});
