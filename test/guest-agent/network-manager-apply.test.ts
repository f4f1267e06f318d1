// `qubes-net-guest apply/remove` on the NetworkManager path, inside a namespace "qube" with the
// real kernel and the real QubesDB daemon. NetworkManager itself is not there (the booted
// template test has it, test/template/nm.test.ts): nmcli is a stand-in that records its
// arguments, and "NetworkManager running" is a real process of that name (a copy of sleep).
// What is checked here is our side: the keyfile, when nmcli is called and when not, our few
// kernel writes (group 1, permanent gateway neighbours; never addresses, routes, the link's up
// state or resolv.conf), bad values, the service without nmcli, remove.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needRoot, isRoot } from '../helpers/root.js';
import { APPENDIX_A_STATE, GuestLab } from './harness.js';

let lab: GuestLab;
let dir = '';
let nmcliLog = '';
let nmcli = '';
let conns = '';
let keyfile = '';
let fakeNm: ChildProcess | undefined;

before(async () => {
  if (!isRoot()) return;
  lab = await GuestLab.create('nm-apply');
  dir = mkdtempSync(join(tmpdir(), 'qn-nm-apply-'));
  nmcliLog = join(dir, 'nmcli.log');
  nmcli = join(dir, 'nmcli');
  conns = join(dir, 'system-connections');
  keyfile = join(conns, 'qubes-uplink-eth0');
  await writeFile(nmcli, `#!/bin/sh\necho "$*" >> ${nmcliLog}\nexit 0\n`, { mode: 0o755 });
});

after(async () => {
  fakeNm?.kill('SIGKILL');
  await lab?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A process whose comm is "NetworkManager": what the agent looks for in /proc. */
function startFakeNetworkManager(): void {
  if (fakeNm) return;
  const bin = join(dir, 'NetworkManager');
  copyFileSync('/bin/sleep', bin);
  fakeNm = spawn(bin, ['600'], { stdio: 'ignore' });
}

function stopFakeNetworkManager(): void {
  fakeNm?.kill('SIGKILL');
  fakeNm = undefined;
}

const nmArgs = ['--nmcli', () => nmcli, '--nm-connections-dir', () => conns] as const;
function cli(args: string[]) {
  return lab.cli([...args, ...nmArgs.map((a) => (typeof a === 'function' ? a() : a))]);
}

async function nmcliCalls(): Promise<string[]> {
  const text = await readFile(nmcliLog, 'utf8').catch(() => '');
  await rm(nmcliLog, { force: true });
  return text.split('\n').filter(Boolean);
}

async function reset(): Promise<void> {
  await lab.clearKeys();
  await cli(['remove', 'eth0']);
  await rm(conns, { recursive: true, force: true });
  await nmcliCalls();
  await writeFile(lab.client.hostPath('/etc/resolv.conf'), '');
  await lab.writeAppendixA({ '/qubes-service/network-manager': '1' });
}

const UUID = 'de85f79b-8c3d-405f-a652-00163e5e6c00';

test('apply hands the uplink to NetworkManager: keyfile, load + up, group 1 and neighbours only', async (t) => {
  if (!needRoot(t)) return;
  startFakeNetworkManager();
  await reset();
  const r = await cli(['apply', 'eth0']);
  assert.equal(r.code, 0, r.stdout);
  const st = await stat(keyfile);
  assert.equal(st.mode & 0o777, 0o600);
  const text = await readFile(keyfile, 'utf8');
  assert.match(text, /^id=VM uplink eth0$/m);
  assert.match(text, new RegExp(`^uuid=${UUID}$`, 'm'));
  assert.match(text, /^address1=10\.137\.0\.7\/32,10\.137\.0\.3$/m);
  assert.deepEqual(await nmcliCalls(), [`--wait 15 connection load ${keyfile}`, `--wait 15 connection up uuid ${UUID}`]);
  const eth0 = await lab.eth0();
  // NetworkManager (absent here) would add the addresses and routes and bring the link up.
  assert.deepEqual({ ...eth0, neighbours: eth0.neighbours.filter((n) => n.startsWith('10.')) }, {
    present: true, up: false, group: '1', addresses: [], routes4: [], routes6: [], neighbours: ['10.137.0.3 fe:ff:ff:ff:ff:ff'],
  });
  assert.equal(await lab.resolvConf(), '', 'resolv.conf is NetworkManager\'s');
  const s = await lab.status();
  assert.equal(s?.status, 'ok');
  assert.match(s?.detail ?? '', /^eth0 10\.137\.0\.7\/32 .*via NetworkManager$/);

  // Again, nothing changed: no nmcli call (a user's `nmcli device disconnect` stays in force).
  const again = await cli(['apply', 'eth0']);
  assert.equal(again.code, 0, again.stdout);
  assert.equal((await stat(keyfile)).ino, st.ino, 'the keyfile is not rewritten');
  assert.deepEqual(await nmcliCalls(), []);
  // …and the gateway's neighbours stay (a second apply, as the watcher's after udev's, once
  // deleted them in its group batch and never put them back).
  assert.deepEqual((await lab.eth0()).neighbours.filter((n) => n.startsWith('10.')), ['10.137.0.3 fe:ff:ff:ff:ff:ff']);
  assert.ok(again.logs.some((l) => l.msg === 'uplink handed to NetworkManager' && l.changed === false), again.stdout);
  // An unrelated key neither.
  await lab.writeKeys({ '/qubes-service/qubes-update-check': '1' });
  assert.equal((await cli(['apply', 'eth0'])).code, 0);
  assert.deepEqual(await nmcliCalls(), []);
});

test('a changed QubesDB value rewrites, loads and re-activates; a bad one is refused and nothing written', async (t) => {
  if (!needRoot(t)) return;
  startFakeNetworkManager();
  await reset();
  assert.equal((await cli(['apply', 'eth0'])).code, 0);
  await nmcliCalls();
  await lab.writeKeys({ '/qubes-service/disable-dns-server': '1' });
  assert.equal((await cli(['apply', 'eth0'])).code, 0);
  assert.doesNotMatch(await readFile(keyfile, 'utf8'), /^dns=/m);
  assert.deepEqual(await nmcliCalls(), [`--wait 15 connection load ${keyfile}`, `--wait 15 connection up uuid ${UUID}`]);

  const before = await readFile(keyfile, 'utf8');
  await lab.writeKeys({ '/qubes-gateway': '10.137.0.3\n[ipv4]' });
  const bad = await cli(['apply', 'eth0']);
  assert.equal(bad.code, 2, bad.stdout);
  assert.ok(bad.logs.some((l) => l.msg === 'uplink config invalid' && l.key === '/qubes-gateway'), bad.stdout);
  assert.equal(await readFile(keyfile, 'utf8'), before);
  assert.deepEqual(await nmcliCalls(), []);
  assert.equal((await lab.status())?.status, 'error');
});

test('NetworkManager not running: the keyfile is written for it to load at start, nmcli is not called', async (t) => {
  if (!needRoot(t)) return;
  stopFakeNetworkManager();
  await reset();
  const r = await cli(['apply', 'eth0']);
  assert.equal(r.code, 0, r.stdout);
  assert.match(await readFile(keyfile, 'utf8'), /^id=VM uplink eth0$/m);
  assert.deepEqual(await nmcliCalls(), []);
  assert.ok(r.logs.some((l) => l.msg === 'NetworkManager not running: it loads the connection when it starts'), r.stdout);
});

test('the service on without nmcli installed: configured directly, as upstream does', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  const r = await lab.cli(['apply', 'eth0', '--nmcli', join(dir, 'no-such-nmcli'), '--nm-connections-dir', conns]);
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  await assert.rejects(stat(keyfile));
  assert.ok(r.logs.some((l) => l.msg === 'NetworkManager path not taken'), r.stdout);
});

test('remove takes the link down and deletes the connection and its keyfile', async (t) => {
  if (!needRoot(t)) return;
  startFakeNetworkManager();
  await reset();
  assert.equal((await cli(['apply', 'eth0'])).code, 0);
  await nmcliCalls();
  await lab.client.exec('ip', ['link', 'set', 'eth0', 'up']);
  const r = await cli(['remove', 'eth0']);
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(await nmcliCalls(), [`--wait 15 connection delete uuid ${UUID}`]);
  await assert.rejects(stat(keyfile));
  assert.equal((await lab.eth0()).up, false);
  await mkdir(conns, { recursive: true });
});

test('a re-plug (remove, then the uplink unit\'s and the watcher\'s applies at once): one activation, the neighbours in place', async (t) => {
  if (!needRoot(t)) return;
  startFakeNetworkManager();
  await reset();
  assert.equal((await cli(['apply', 'eth0'])).code, 0);
  assert.equal((await cli(['remove', 'eth0'])).code, 0);
  await nmcliCalls();
  const results = await Promise.all([cli(['apply', 'eth0']), cli(['apply', 'eth0'])]);
  for (const r of results) assert.equal(r.code, 0, r.stdout);
  // The lock orders them: the first writes and activates, the second finds the keyfile as
  // QubesDB says and only checks our part, which it leaves in place.
  assert.deepEqual(await nmcliCalls(), [`--wait 15 connection load ${keyfile}`, `--wait 15 connection up uuid ${UUID}`]);
  const eth0 = await lab.eth0();
  assert.equal(eth0.group, '1');
  assert.deepEqual(eth0.neighbours, ['10.137.0.3 fe:ff:ff:ff:ff:ff', 'fd09:24ef:4179::a89:3 fe:ff:ff:ff:ff:ff']);
  const changed = results.map((r) => r.logs.find((l) => l.msg === 'uplink handed to NetworkManager')?.changed);
  assert.deepEqual(changed.sort(), [false, true], results.map((r) => r.stdout).join('\n'));
  const st = await lab.cli(['status', 'eth0', ...nmArgs.map((a) => (typeof a === 'function' ? a() : a))]);
  assert.equal(st.code, 0, st.stdout);
});
