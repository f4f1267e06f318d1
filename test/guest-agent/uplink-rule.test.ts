// Pure parts of the one-shot shape: which links may be an uplink (the Xen-only rule and its
// override), the watcher's argv for an uplink, and the apply lock's mutual exclusion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseUplink, isUplinkCandidate, uplinkDrivers, watchArgs, acquireApplyLock, WATCHED_PATHS, type LinkState } from '@qubes-net/guest-agent';

const link = (ifname: string, mac: string): LinkState => ({ ifindex: 1, ifname, mac, up: true, group: 'default', addresses: [] });

test('uplink drivers: vif by default; QUBES_NET_UPLINK_DRIVERS widens it, malformed entries are dropped', () => {
  assert.deepEqual(uplinkDrivers(undefined), ['vif']);
  assert.deepEqual(uplinkDrivers(''), ['vif']);
  assert.deepEqual(uplinkDrivers('vif,none'), ['vif', 'none']);
  assert.deepEqual(uplinkDrivers(' vif , bad/../x, none '), ['vif', 'none']);
  assert.deepEqual(uplinkDrivers('$(reboot)'), ['vif']);
});

test('uplink candidates: a Xen frontend only, never the backend MAC', () => {
  assert.equal(isUplinkCandidate(link('eth0', '00:16:3e:5e:6c:00'), 'vif', ['vif']), true);
  assert.equal(isUplinkCandidate(link('vif3.0', 'fe:ff:ff:ff:ff:ff'), 'vif', ['vif']), false, 'a downstream vif');
  assert.equal(isUplinkCandidate(link('eth0', '00:16:3e:5e:6c:00'), 'none', ['vif']), false, 'a veth without the override');
  assert.equal(isUplinkCandidate(link('eth0', '00:16:3e:5e:6c:00'), 'none', ['vif', 'none']), true);
  assert.equal(isUplinkCandidate(link('eth0', '00:16:3e:5e:6c:00'), 'e1000e', ['vif', 'none']), false, 'a physical NIC');
});

test('uplink choice: /qubes-mac only matches an eligible link', () => {
  const mac = '00:16:3e:5e:6c:01';
  const links = [link('eth0', '00:16:3e:00:00:01'), link('eth1', mac)];
  assert.deepEqual(chooseUplink(links, mac, undefined, (l) => l.ifname !== 'eth1'), { ifname: 'eth0', by: 'fallback' });
  assert.deepEqual(chooseUplink(links, mac, undefined, () => true), { ifname: 'eth1', by: 'mac' });
});

test('watch-args: every watched key, the link, and apply of the same interface', () => {
  const args = watchArgs('eth0', { cli: ['/usr/bin/qubes-net-guest'] });
  const qdb = args.flatMap((a, i) => (a === '--qdb' ? [args[i + 1]!] : []));
  assert.deepEqual(qdb, [...WATCHED_PATHS]);
  for (const k of ['/qubes-ip', '/qubes-netmask', '/qubes-gateway', '/qubes-primary-dns', '/qubes-secondary-dns', '/qubes-ip6', '/qubes-gateway6', '/qubes-mac']) assert.ok(qdb.includes(k), k);
  assert.ok(!qdb.includes('/qubes-uplink-status'), 'our own feedback key would wake us up');
  assert.deepEqual(args.slice(args.indexOf('--link'), args.indexOf('--link') + 2), ['--link', 'eth0']);
  assert.deepEqual(args.slice(args.indexOf('--run')), ['--run', '--', '/usr/bin/qubes-net-guest', 'apply', 'eth0']);
  const lab = watchArgs('eth1', { cli: ['/n', '/c.js'], qubesdbRunDir: '/q', debounceMs: 50, runAtStart: true, applyArgs: ['--resolv-conf', '/r'] });
  assert.deepEqual(lab.slice(0, 5), ['--qdb-dir', '/q', '--debounce-ms', '50', '--run-at-start']);
  assert.deepEqual(lab.slice(lab.indexOf('--run')), ['--run', '--', '/n', '/c.js', 'apply', 'eth1', '--qubesdb-run-dir', '/q', '--resolv-conf', '/r']);
});

test('apply lock: a second holder waits until the first releases', async () => {
  const name = `qubes-net-guest-test-${process.pid}`;
  const first = await acquireApplyLock(1000, name);
  let secondGot = false;
  const second = acquireApplyLock(10_000, name).then((l) => { secondGot = true; return l; });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(secondGot, false, 'still held by the first');
  first.release();
  const l2 = await second;
  assert.equal(secondGot, true);
  l2.release();
  await assert.rejects(acquireApplyLock(50, name).then(async (a) => { try { await acquireApplyLock(60, name); } finally { a.release(); } }), /held the lock/);
});
