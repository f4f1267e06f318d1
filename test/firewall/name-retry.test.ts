// Issue 13 (dead upstream DNS): a name that did not resolve is retried with back-off (1 s,
// doubling, capped at the retry interval), a success resets it, and the refresh timer (and so
// the network agent's wake deadline) follows the back-off instead of the 30 s retry interval.
// Pure: a scripted resolver and a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NameCache, failedRetryDelayMs, refreshDelayMs, DEFAULT_REFRESH, type HostResolution } from '@qubes-net/firewall';

test('back-off schedule: 1 s, doubling, capped at the retry interval', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50, 5000].map((n) => failedRetryDelayMs(n)), [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]);
  const b = { minMs: 10_000, maxMs: 3_600_000, retryMs: 5_000, firstRetryMs: 300 };
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => failedRetryDelayMs(n, b)), [300, 600, 1_200, 2_400, 4_800]);
  assert.equal(failedRetryDelayMs(6, b), 5_000);
  // A first retry longer than the cap is the cap; nonsense counts give the first step.
  assert.equal(failedRetryDelayMs(1, { ...b, firstRetryMs: 60_000 }), 5_000);
  assert.equal(failedRetryDelayMs(0, b), 300);
  assert.equal(failedRetryDelayMs(-3, b), 300);
});

test('refresh delay of a failed name is its back-off, not clamped up to the minimum TTL refresh', () => {
  const fail = (retryInMs?: number): HostResolution => ({ ok: false, error: 'timeout', ...(retryInMs !== undefined ? { retryInMs } : {}) });
  assert.equal(refreshDelayMs([fail(1_000)], DEFAULT_REFRESH), 1_000);
  assert.equal(refreshDelayMs([{ ok: true, addrs: ['203.0.113.1'], ttlSeconds: 3600 }, fail(4_000)], DEFAULT_REFRESH), 4_000);
  // Without a back-off value: the retry interval, as before; never above it.
  assert.equal(refreshDelayMs([fail()], DEFAULT_REFRESH), 30_000);
  assert.equal(refreshDelayMs([fail(10 ** 9)], DEFAULT_REFRESH), 30_000);
  // TTL-based delays keep their bounds.
  assert.equal(refreshDelayMs([{ ok: true, addrs: [], ttlSeconds: 0 }, fail(20_000)], DEFAULT_REFRESH), 10_000);
});

function scripted(answers: HostResolution[]) {
  const calls: string[] = [];
  const resolve = async (host: string, family: 4 | 6): Promise<HostResolution> => {
    calls.push(`${family} ${host}`);
    return answers.shift() ?? { ok: false, error: 'script ended' };
  };
  return { calls, resolve };
}

test('name cache: consecutive failures back off, a success resets, a failure is served from cache for 1 s at most', async () => {
  let now = 1_000_000;
  const ok: HostResolution = { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 };
  const down: HostResolution = { ok: false, error: 'timeout' };
  const r = scripted([down, down, down, ok, down]);
  const cache = new NameCache(r.resolve, DEFAULT_REFRESH, () => now);
  const retry = (x: HostResolution) => (x.ok ? 'ok' : x.retryInMs);

  assert.equal(retry(await cache.get('web.test', 4)), 1_000);
  assert.equal(cache.failuresOf('web.test', 4), 1);
  now += 999;
  assert.equal(retry(await cache.get('web.test', 4)), 1_000, 'still cached');
  assert.equal(r.calls.length, 1);
  now += 1;
  assert.equal(retry(await cache.get('web.test', 4)), 2_000);
  now += 2_000;
  assert.equal(retry(await cache.get('web.test', 4)), 4_000);
  now += 4_000;
  assert.equal(retry(await cache.get('web.test', 4)), 'ok');
  assert.equal(cache.failuresOf('web.test', 4), 0, 'a success resets the back-off');
  now += 300_000;
  assert.equal(retry(await cache.get('web.test', 4)), 1_000, 'a later failure starts again at the first step');
  assert.equal(r.calls.length, 5);
});

test('name cache: forgetFailures makes the next request look up at once and keeps the count; clear resets it', async () => {
  const now = 5_000;
  const down: HostResolution = { ok: false, error: 'timeout' };
  const ok: HostResolution = { ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 };
  const r = scripted([down, down, ok, down, down]);
  const cache = new NameCache(r.resolve, DEFAULT_REFRESH, () => now);
  const retry = (x: HostResolution) => (x.ok ? 'ok' : x.retryInMs);
  assert.equal(retry(await cache.get('a.test', 4)), 1_000);
  assert.equal(retry(await cache.get('b.test', 4)), 1_000);
  cache.forgetFailures();
  assert.equal(retry(await cache.get('a.test', 4)), 'ok', 'looked up again at once (the clock did not move)');
  assert.equal(retry(await cache.get('b.test', 4)), 2_000, 'still failing: backs off further');
  cache.clear();
  assert.equal(retry(await cache.get('b.test', 4)), 1_000, 'new DNS servers: the back-off starts over');
  assert.equal(r.calls.length, 5);
});

test('name cache: concurrent requests share one lookup; a resolver that throws counts as a failure', async () => {
  let release!: (r: HostResolution) => void;
  let calls = 0;
  const cache = new NameCache(() => {
    calls++;
    if (calls === 1) return new Promise<HostResolution>((res) => (release = res));
    throw new Error('resolver broke');
  }, DEFAULT_REFRESH, () => 0);
  const a = cache.get('x.test', 6);
  const b = cache.get('x.test', 6);
  release({ ok: false, error: 'timeout' });
  assert.deepEqual(await a, await b);
  assert.equal(calls, 1);
  assert.equal(cache.failuresOf('x.test', 6), 1);
  cache.forgetFailures();
  const c = await cache.get('x.test', 6);
  assert.deepEqual(c, { ok: false, error: 'resolver broke', retryInMs: 2_000 });
});

test('name cache: a probe starts a fresh lookup unless one began moments ago (one sent while DNS was dead may hang)', async () => {
  let now = 0;
  const pending: ((r: HostResolution) => void)[] = [];
  let calls = 0;
  const cache = new NameCache(() => {
    calls++;
    return new Promise<HostResolution>((res) => pending.push(res));
  }, DEFAULT_REFRESH, () => now);
  const first = cache.get('web.test', 4);
  now += 100;
  void cache.probe('web.test', 4);
  assert.equal(calls, 1, 'shared: began 100 ms ago');
  now += 900;
  const fresh = cache.probe('web.test', 4);
  assert.equal(calls, 2, 'fresh: the one in flight began 1 s ago');
  pending[1]!({ ok: true, addrs: ['203.0.113.80'], ttlSeconds: 300 });
  assert.equal((await fresh).ok, true);
  // The old lookup failing late neither counts as a failure nor replaces the good answer.
  pending[0]!({ ok: false, error: 'timeout' });
  await first;
  assert.equal(cache.failuresOf('web.test', 4), 0);
  assert.equal((await cache.get('web.test', 4)).ok, true);
  assert.equal((await cache.probe('web.test', 4)).ok, true);
  assert.equal(calls, 2);
});
