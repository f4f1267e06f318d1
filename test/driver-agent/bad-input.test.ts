// Issue item 7 end to end: bad values in the environment, xenstore, QubesDB and on the
// control socket. Each gives one clear pino error naming the source and the (shortened)
// value; that vif stays unconfigured and therefore blocked; other vifs are unaffected; the
// daemon keeps running.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ping, INTERNET } from '@qubes-net/netns';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { DriverLab, type Client, GATEWAY } from './lab.js';

let lab: DriverLab;
let good: Client;
let victim: Client;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-bad');
  [good, victim] = await Promise.all([lab.addClient('good', 41), lab.addClient('victim', 42)]);
  await lab.startDaemonReady();
  await lab.online(good);
});

after(async () => {
  await lab?.destroy();
});

async function goodStillWorks(): Promise<void> {
  assert.ok(await ping(good.qube, INTERNET.web4), 'the other vif is unaffected');
  assert.equal(lab.daemon?.child.exitCode, null, 'the daemon keeps running');
}

async function assertBlocked(c: Client): Promise<void> {
  assert.equal(await ping(c.qube, INTERNET.web4, { timeoutMs: 500 }), false, `${c.vif} is blocked`);
  assert.ok(!(await lab.setElements('ip', 'allowed')).some((e) => e.startsWith(`${c.vif} `)), `${c.vif} has no anti-spoofing element`);
  assert.deepEqual((await lab.vifKernel(c.vif)).routes, [], `${c.vif} has no route`);
}

const badEnvNames = ['vif99999.0', 'eth0', 'vif1.0;reboot', 'vif01.0', 'x'.repeat(60)];
for (const name of badEnvNames) {
  test(`malformed vif name in the environment: ${JSON.stringify(name.slice(0, 16))}`, async (t) => {
    if (!needRoot(t)) return;
    const before = lab.logs('vif rejected').length;
    const r = await lab.hotplug('online', name, 42);
    assert.notEqual(r.code, 0);
    assert.equal(await lab.netvm.xenstoreRead(`${lab.xenbusPath(42)}/hotplug-status`), 'error');
    await waitFor('error event', () => lab.logs('vif rejected').length > before);
    const e = lab.logs('vif rejected').at(-1)!;
    assert.equal(e.level, 50);
    assert.equal(e.source, 'env');
    assert.equal(e.key, 'vif');
    assert.equal(e.value, name);
    await goodStillWorks();
  });
}

const badXenstore: Array<[string, { ip?: string; mac?: string }, RegExp]> = [
  ['a malformed IP', { ip: '10.137.0.42x' }, /ip$/],
  ['an IP with shell syntax', { ip: '10.137.0.42;$(reboot)' }, /ip$/],
  ['the gateway\'s own IP', { ip: GATEWAY }, /./],
  ['3 KB of garbage as IP', { ip: 'A'.repeat(3000) }, /ip$/],
  ['a malformed MAC', { mac: '00:16:3E:5E:6C:00' }, /mac$/],
  ['a multicast MAC', { mac: '01:00:5e:00:00:01' }, /mac$/],
];
for (const [label, over, key] of badXenstore) {
  test(`${label} in xenstore: error naming it, vif blocked, others unaffected`, async (t) => {
    if (!needRoot(t)) return;
    // First configured properly, so the bad event must also take the old configuration away.
    await lab.setXenstore(victim);
    await lab.online(victim);
    assert.ok(await ping(victim.qube, INTERNET.web4));
    await lab.setXenstore(victim, over);
    const before = lab.logs().length;
    const r = await lab.hotplug('online', victim.vif, victim.domid);
    assert.equal(r.code, 1);
    assert.equal(await lab.netvm.xenstoreRead(`${lab.xenbusPath(42)}/hotplug-status`), 'error');
    const entry = await lab.waitEntry(victim.vif, 'error');
    assert.ok(entry.detail && entry.detail.length < 500);
    assert.equal(entry.ip, '');
    const errors = lab.logs().slice(before).filter((l) => l.level >= 50);
    assert.equal(errors.length, 1, JSON.stringify(errors));
    const e = errors[0]!;
    assert.equal(e.vif, victim.vif);
    if (e.msg === 'vif rejected') {
      assert.equal(e.source, 'xenstore');
      assert.match(String(e.key), key);
      assert.ok(String(e.value).length <= 120, 'value shortened');
    } else {
      assert.equal(e.msg, 'vif error');
    }
    await assertBlocked(victim);
    await goodStillWorks();
  });
}

test('a vif that does not exist: error, nothing configured', async (t) => {
  if (!needRoot(t)) return;
  await lab.setXenstore({ domid: 43, ip: '10.137.0.43', ip6: '' });
  const r = await lab.hotplug('online', 'vif43.0', 43);
  assert.equal(r.code, 1);
  await lab.waitEntry('vif43.0', 'error');
  assert.ok(!(await lab.setElements('ip', 'allowed')).some((e) => e.startsWith('vif43.0 ')));
  await goodStillWorks();
});

test('a malformed gateway in QubesDB: error naming key and value; vifs keep the last valid one', async (t) => {
  if (!needRoot(t)) return;
  const before = lab.logs().length;
  await lab.writeKeys({ '/qubes-netvm-gateway': '10.137.0.2; reboot' });
  await waitFor('error event', () => lab.logs().slice(before).some((l) => l.msg === 'invalid provider setting'));
  const e = lab.logs().slice(before).find((l) => l.msg === 'invalid provider setting')!;
  assert.equal(e.source, 'qubesdb');
  assert.equal(e.key, '/qubes-netvm-gateway');
  assert.equal(e.value, '10.137.0.2; reboot');
  assert.deepEqual((await lab.vifKernel(good.vif)).addrs.filter((a) => !a.includes(':')), [`${GATEWAY}/32`]);
  await goodStillWorks();
  await lab.writeKeys({ '/qubes-netvm-gateway': GATEWAY });
});

test('a daemon started with no valid gateway configures no vif (blocked), and recovers when fixed', async (t) => {
  if (!needRoot(t)) return;
  await lab.stopDaemon();
  await lab.writeKeys({ '/qubes-netvm-gateway': 'garbage' });
  await lab.startDaemonReady();
  await lab.setXenstore(victim);
  const r = await lab.hotplug('online', victim.vif, victim.domid);
  assert.equal(r.code, 1);
  assert.match((await lab.waitEntry(victim.vif, 'error')).detail!, /qubes-netvm-gateway/);
  await assertBlocked(victim);
  assert.equal(await ping(good.qube, INTERNET.web4, { timeoutMs: 500 }), false, 'fail closed: no vif is trusted without a gateway');
  await lab.writeKeys({ '/qubes-netvm-gateway': GATEWAY });
  await lab.online(good);
  await lab.online(victim);
  assert.ok(await ping(victim.qube, INTERNET.web4));
  await goodStillWorks();
});

test('malformed /connected-ips entries: error naming the key, the valid entries still protected', async (t) => {
  if (!needRoot(t)) return;
  const before = lab.logs().length;
  await lab.writeKeys({ '/connected-ips': `${good.ip} not-an-ip 10.137.0.250` });
  await waitFor('connected set updated', async () => (await lab.setElements('ip', 'connected')).length === 2);
  assert.deepEqual(await lab.setElements('ip', 'connected'), ['10.137.0.250', good.ip].sort());
  const e = lab.logs().slice(before).find((l) => l.msg === 'invalid provider setting');
  assert.equal(e?.key, '/connected-ips');
  assert.equal(e?.value, 'not-an-ip');
  await goodStillWorks();
});

test('garbage on the control socket: an error reply, the daemon keeps running', async (t) => {
  if (!needRoot(t)) return;
  const send = (text: string) => lab.netvm.exec(process.execPath, ['-e', `
    const s = require('net').connect('/run/qubes-net/driver.sock');
    let out = ''; s.on('data', (d) => { out += d; if (out.includes('\\n')) { process.stdout.write(out); s.end(); } });
    s.write(${JSON.stringify(text)});`]);
  for (const junk of ['not json\n', '[1,2]\n', '{"op":"reboot"}\n', '{"op":"online","vif":{"x":1}}\n']) {
    const r = JSON.parse((await send(junk)).stdout);
    assert.equal(r.ok, false, junk);
    assert.ok(typeof r.error === 'string' && r.error.length > 0);
  }
  await goodStillWorks();
});
