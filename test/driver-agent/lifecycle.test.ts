// The vif lifecycle against the real kernel: restart in the middle of traffic, offline
// cleaning up exactly, a vif vanishing, IP reuse, the no-daemon fallback, restart
// reconciliation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { unlink, mkdir, writeFile, readFile } from 'node:fs/promises';
import { ping, tcpHold, httpGet, INTERNET } from '@qubes-net/netns';
import { expectedRuleCounts } from '@qubes-net/driver-agent';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { DriverLab, provider, type Client } from './lab.js';

let lab: DriverLab;
let c1: Client;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-life');
  c1 = await lab.addClient('client1', 31);
  await lab.startDaemonReady();
  await lab.online(c1);
});

after(async () => {
  await lab?.destroy();
});

async function ruleCounts(family: 'ip' | 'ip6'): Promise<Map<string, number>> {
  const doc = await lab.table(family);
  const out = new Map<string, number>();
  for (const item of doc?.nftables ?? []) if (item.rule) out.set(item.rule.chain, (out.get(item.rule.chain) ?? 0) + 1);
  return out;
}

test('restart in the middle of traffic: at most one lost ping, no duplicate rules, user rules intact', async (t) => {
  if (!needRoot(t)) return;
  await lab.netvm.exec('nft', ['add', 'rule', 'ip', 'qubes', 'custom-forward', 'ip', 'saddr', '10.137.0.250', 'counter', 'comment', '"user rule"']);
  await lab.netvm.exec('nft', ['add', 'rule', 'ip', 'qubes', 'custom-input', 'counter', 'comment', '"user input"']);
  const hold = await tcpHold(c1.qube, INTERNET.web4, INTERNET.echoPorts[0], { intervalMs: 50, stallMs: 3000 });
  // A stream of pings, one after the other, across two restarts (clean stop, then a crash).
  const results: boolean[] = [];
  let stop = false;
  const stream = (async () => {
    while (!stop) results.push(await ping(c1.qube, INTERNET.web4, { timeoutMs: 500 }));
  })();
  await waitFor('pings flowing', () => results.length >= 3);
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    await lab.stopDaemon(signal);
    await lab.startDaemonReady();
  }
  const at = results.length;
  await waitFor('pings after the restarts', () => results.length >= at + 3);
  stop = true;
  await stream;
  const lost = results.filter((x) => !x).length;
  assert.ok(lost <= 1, `lost ${lost} of ${results.length} pings`);
  await hold.waitForMoreEchoes(3);
  assert.equal(hold.brokenEvent(), undefined, 'the TCP connection survived');
  await hold.stop();

  const want = expectedRuleCounts(true);
  for (const f of ['ip', 'ip6'] as const) {
    const have = await ruleCounts(f);
    for (const [chain, n] of want[f]) assert.equal(have.get(chain), n, `${f} ${chain}: no duplicates`);
  }
  const custom = (await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'custom-forward'])).stdout;
  assert.match(custom, /ip saddr 10\.137\.0\.250 counter packets \d+ bytes \d+ comment "user rule"/);
  assert.match((await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'custom-input'])).stdout, /comment "user input"/);
  const s = await lab.status();
  assert.deepEqual(s.kernel.differences, []);
  assert.equal(s.vifs[0].state, 'online');
});

test('offline undoes exactly what online did', async (t) => {
  if (!needRoot(t)) return;
  const c = await lab.addClient('client2', 32);
  const snapshot = async () => ({
    allowed4: await lab.setElements('ip', 'allowed'), allowed6: await lab.setElements('ip6', 'allowed'),
    down4: await lab.setElements('ip', 'downstream'), down6: await lab.setElements('ip6', 'downstream'),
    vif: await lab.vifKernel(c.vif),
    proxyArp: (await lab.netvm.exec('cat', [`/proc/sys/net/ipv4/conf/${c.vif}/proxy_arp`])).stdout.trim(),
    proxyNdp: (await lab.netvm.exec('cat', [`/proc/sys/net/ipv6/conf/${c.vif}/proxy_ndp`])).stdout.trim(),
  });
  await lab.netvm.exec('ip', ['link', 'set', c.vif, 'down']); // as Xen creates it
  const before = await snapshot();
  await lab.online(c);
  assert.ok(await ping(c.qube, INTERNET.web4));
  const during = await snapshot();
  assert.ok(during.allowed4.includes(`${c.vif} ${c.ip}`));
  assert.equal(during.proxyArp, '1');
  const off = await lab.hotplug('offline', c.vif, c.domid);
  assert.equal(off.code, 0, off.stderr);
  assert.deepEqual(await snapshot(), before);
  await lab.waitEntry(c.vif, 'offline'); // the vif still exists: its entry says offline
  assert.equal(await ping(c.qube, INTERNET.web4), false);
  assert.ok(await ping(c1.qube, INTERNET.web4), 'the other vif is unaffected');
  // A second offline (Xen may repeat it) changes nothing and succeeds.
  assert.equal((await lab.hotplug('offline', c.vif, c.domid)).code, 0);
  // The vif goes away: its entries go too.
  await lab.session.unlink(lab.netvm, c.vif);
  await waitFor('entries removed', async () => Object.keys(await lab.vifEntry(c.vif)).length === 0);
  assert.equal((await lab.hotplug('offline', c.vif, c.domid)).code, 0, 'offline of a vanished vif is fine');
});

test('a vif that vanishes while online is cleaned up', async (t) => {
  if (!needRoot(t)) return;
  const c = await lab.addClient('client3', 33);
  await lab.online(c);
  assert.ok((await lab.setElements('ip', 'allowed')).includes(`${c.vif} ${c.ip}`));
  await lab.session.unlink(lab.netvm, c.vif);
  await waitFor('elements removed', async () => !(await lab.setElements('ip', 'allowed')).some((e) => e.startsWith(`${c.vif} `)));
  await waitFor('entries removed', async () => Object.keys(await lab.vifEntry(c.vif)).length === 0);
  assert.ok(!(await lab.setElements('ip', 'downstream')).includes(c.ip));
});

test('IP reuse: the old vif going offline leaves the new owner working', async (t) => {
  if (!needRoot(t)) return;
  // The same qube restarted with a new domid (vif36.0) before its old vif (vif35.0) went offline.
  const a = await lab.addClient('reuse-a', 35, { ip: '10.137.0.78', ip6: null });
  const b = await lab.addClient('reuse-b', 36, { ip: '10.137.0.78', ip6: null });
  await lab.online(a);
  await lab.online(b);
  assert.deepEqual((await lab.setElements('ip', 'allowed')).filter((e) => e.endsWith(' 10.137.0.78')), ['vif35.0 10.137.0.78', 'vif36.0 10.137.0.78']);
  assert.equal((await lab.hotplug('offline', a.vif, a.domid)).code, 0);
  assert.ok((await lab.setElements('ip', 'downstream')).includes('10.137.0.78'), 'still owned by vif36.0');
  assert.deepEqual((await lab.vifKernel(b.vif)).routes, [`10.137.0.78 metric ${32752 - 36}`]);
  assert.ok(await ping(b.qube, INTERNET.web4), 'the new owner works');
  assert.equal((await httpGet(b.qube, `http://${INTERNET.web4}/`)).status, 200);
});

test('a client without IPv6 sends no IPv6', async (t) => {
  if (!needRoot(t)) return;
  const c = await lab.addClient('v4only', 37, { ip6: null });
  await lab.online(c);
  assert.ok(await ping(c.qube, INTERNET.web4));
  await c.qube.exec('ip', ['addr', 'add', 'fd09:24ef:4179::a89:25/128', 'dev', 'eth0', 'nodad']);
  await c.qube.exec('ip', ['-6', 'route', 'add', 'default', 'via', 'fd09:24ef:4179::a89:2', 'dev', 'eth0', 'onlink']);
  await c.qube.exec('ip', ['neigh', 'replace', 'fd09:24ef:4179::a89:2', 'dev', 'eth0', 'lladdr', 'fe:ff:ff:ff:ff:ff', 'nud', 'permanent']);
  const before = await lab.counter('ip6', 'antispoof');
  assert.equal(await ping(c.qube, INTERNET.web6, { count: 2 }), false);
  await waitFor('dropped by anti-spoofing', async () => (await lab.counter('ip6', 'antispoof')) > before);
});

test('restart reconciles: vifs gone meanwhile are forgotten, an address another vif owns survives', async (t) => {
  if (!needRoot(t)) return;
  const gone = await lab.addClient('gone', 38, { ip: '10.137.0.88', ip6: null });
  const keeper = await lab.addClient('keeper', 39, { ip: '10.137.0.88', ip6: null });
  await lab.online(gone);
  await lab.online(keeper);
  await lab.stopDaemon('SIGKILL');
  await lab.session.unlink(lab.netvm, gone.vif);
  assert.ok((await lab.setElements('ip', 'allowed')).includes('vif38.0 10.137.0.88'), 'left behind while no daemon ran');
  await lab.startDaemonReady();
  assert.ok(!(await lab.setElements('ip', 'allowed')).includes('vif38.0 10.137.0.88'));
  assert.ok((await lab.setElements('ip', 'allowed')).includes('vif39.0 10.137.0.88'));
  assert.ok((await lab.setElements('ip', 'downstream')).includes('10.137.0.88'));
  assert.deepEqual(await lab.vifEntry(gone.vif), {});
  assert.equal((await lab.vifEntry(keeper.vif)).state, 'online');
  assert.ok(await ping(keeper.qube, INTERNET.web4));
  assert.deepEqual((await lab.status()).kernel.differences, []);
});

test('without a daemon the hotplug client does the work in-process (also after a crash)', async (t) => {
  if (!needRoot(t)) return;
  const c = await lab.addClient('nodaemon', 40);
  await lab.stopDaemon('SIGKILL'); // leaves a dead socket file behind
  assert.ok(lab.socketExists());
  const on = await lab.hotplug('online', c.vif, c.domid);
  assert.equal(on.code, 0, on.stderr + on.stdout);
  assert.equal(await lab.netvm.xenstoreRead(`${lab.xenbusPath(40)}/hotplug-status`), 'connected');
  await lab.waitEntry(c.vif, 'online');
  assert.ok(await ping(c.qube, INTERNET.web4));
  assert.ok(await ping(c1.qube, INTERNET.web4), 'the daemon-configured vifs still work');

  // Even with no ruleset at all (fresh boot, daemon not started yet): the base comes first.
  await unlink(lab.netvm.hostPath('/run/qubes-net/driver.sock'));
  await lab.netvm.exec('nft', ['delete', 'table', 'ip', 'qubes']);
  await lab.netvm.exec('nft', ['delete', 'table', 'ip6', 'qubes']);
  const again = await lab.hotplug('online', c.vif, c.domid);
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.ok((await lab.setElements('ip', 'allowed')).includes(`${c.vif} ${c.ip}`));
  assert.ok(await ping(c.qube, INTERNET.web4));
  const off = await lab.hotplug('offline', c.vif, c.domid);
  assert.equal(off.code, 0, off.stderr);
  assert.ok(!(await lab.setElements('ip', 'allowed')).includes(`${c.vif} ${c.ip}`));
  // status works without a daemon too (read-only, from QubesDB and the kernel).
  const st = await lab.cli(['status', '--json', '--resolv-conf', '/run/qn-drv/resolv.conf']);
  assert.equal(st.code, 0, st.stderr);
  assert.ok(JSON.parse(st.stdout).vifs.some((v: any) => v.vif === c1.vif && v.state === 'online'));
  // The daemon comes back and picks everything up.
  await lab.startDaemonReady();
  assert.deepEqual((await lab.status()).kernel.differences, []);
  assert.ok(await ping(c1.qube, INTERNET.web4));
});

test('the CLI entry and the script without the C client reach the daemon too', async (t) => {
  if (!needRoot(t)) return;
  const c = await lab.addClient('viacli', 44);
  // xl devd → vif-route-qubes with no C client installed → `qubes-net-driver hotplug`.
  const r = await lab.hotplug('online', c.vif, c.domid, { QUBES_NET_HOTPLUG: '/nonexistent/qubes-net-hotplug' });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(await lab.netvm.xenstoreRead(`${lab.xenbusPath(44)}/hotplug-status`), 'connected');
  assert.ok(lab.logs('vif online').some((l) => l.vif === c.vif), 'handled by the daemon, not in-process');
  assert.ok(await ping(c.qube, INTERNET.web4));
  // add/remove are no-ops for vif devices (like Xen's vif-common).
  assert.equal((await lab.hotplug('add', c.vif, c.domid)).code, 0);
  assert.equal((await lab.hotplug('remove', c.vif, c.domid, { QUBES_NET_HOTPLUG: '/nonexistent' })).code, 0);
  const off = await lab.hotplug('offline', c.vif, c.domid, { QUBES_NET_HOTPLUG: '/nonexistent/qubes-net-hotplug' });
  assert.equal(off.code, 0, off.stderr);
  await lab.waitEntry(c.vif, 'offline');
});

test('user hooks in /rw/config/network-hooks.d run with command, vif, type and each address', async (t) => {
  if (!needRoot(t)) return;
  const dir = lab.netvm.hostPath('/rw/config/network-hooks.d');
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/10-record`, '#!/bin/sh\necho "$*" >> /run/qn-drv/hook.log\n', { mode: 0o755 });
  await writeFile(`${dir}/20-not-executable`, '#!/bin/sh\necho never >> /run/qn-drv/hook.log\n', { mode: 0o644 });
  await writeFile(`${dir}/30-failing`, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
  try {
    const c = await lab.addClient('hooked', 45);
    await lab.online(c);
    const log = () => readFile(lab.netvm.hostPath('/run/qn-drv/hook.log'), 'utf8').catch(() => '');
    assert.deepEqual((await log()).trim().split('\n').sort(), [`online ${c.vif} vif ${c.ip}`, `online ${c.vif} vif ${c.ip6}`].sort());
    assert.ok(await ping(c.qube, INTERNET.web4), 'a failing hook changes nothing');
    assert.ok(lab.logs('network hook failed').some((l) => String(l.hook).endsWith('30-failing')));
    assert.equal((await lab.hotplug('offline', c.vif, c.domid)).code, 0);
    assert.ok((await log()).includes(`offline ${c.vif} vif ${c.ip}`));
    assert.ok(!(await log()).includes('never'));
  } finally {
    await unlink(`${dir}/10-record`).catch(() => undefined);
    await unlink(`${dir}/20-not-executable`).catch(() => undefined);
    await unlink(`${dir}/30-failing`).catch(() => undefined);
  }
});

test('a hook that hangs holds up only its own vif\'s reply, never the other vifs', async (t) => {
  if (!needRoot(t)) return;
  const dir = lab.netvm.hostPath('/rw/config/network-hooks.d');
  await mkdir(dir, { recursive: true });
  // Hangs for vif46.0's online only, until the file /run/qn-drv/release appears.
  await writeFile(`${dir}/10-hang`, '#!/bin/sh\n[ "$1 $2" = "online vif46.0" ] || exit 0\nwhile [ ! -e /run/qn-drv/release ]; do sleep 0.05; done\n', { mode: 0o755 });
  try {
    const slow = await lab.addClient('slowhook', 46);
    const fast = await lab.addClient('fasthook', 47);
    let slowDone = false;
    const slowP = lab.online(slow).then(() => (slowDone = true));
    await lab.online(fast);
    assert.equal(slowDone, false, 'the other vif came online while the hook still hangs');
    assert.ok(await ping(fast.qube, INTERNET.web4));
    await writeFile(lab.netvm.hostPath('/run/qn-drv/release'), '');
    await slowP;
    assert.ok(await ping(slow.qube, INTERNET.web4));
  } finally {
    await writeFile(lab.netvm.hostPath('/run/qn-drv/release'), '').catch(() => undefined);
    await unlink(`${dir}/10-hang`).catch(() => undefined);
  }
});

test('a restarted QubesDB daemon gets the vif entries and the DNS upstream back', async (t) => {
  if (!needRoot(t)) return;
  await lab.qdb.restart();
  // dom0 rewrites its keys into the fresh database; that (and the client's re-report) wakes the driver.
  await lab.writeKeys(provider());
  await lab.waitEntry(c1.vif, 'online');
  // The DNS feedback is written just after the vif entries: wait for it rather than race it.
  await waitFor('/qubes-dns-upstream written again', async () => (await lab.db.read('/qubes-dns-upstream')) === '198.51.100.53 198.51.100.54');
  assert.ok(await ping(c1.qube, INTERNET.web4));
});
