// `qubes-net-guest apply/remove/status` inside a namespace "qube", against the real kernel,
// the real QubesDB daemon and the FFI client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { ping } from '@qubes-net/netns';
import { APPENDIX_A_STATE, CLI, GuestLab, parseLogLines } from './harness.js';

let lab: GuestLab;

before(async () => {
  if (isRoot()) lab = await GuestLab.create('guest-apply');
});
after(async () => {
  await lab?.destroy();
});

/** Back to a fresh start: no keys of ours, no configuration, eth0 down. */
async function reset(): Promise<void> {
  await lab.clearKeys();
  await lab.cli(['remove', 'eth0']);
  await lab.client.exec('ip', ['link', 'set', 'eth0', 'down']);
  await writeFile(lab.client.hostPath('/etc/resolv.conf'), '');
}

test('apply gives exactly the upstream result (Appendix A); a second apply changes nothing', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  const first = await lab.cli(['apply']);
  assert.equal(first.code, 0, first.stdout);
  const configured = first.logs.find((l) => l.msg === 'uplink configured');
  assert.ok(configured, first.stdout);
  assert.equal(configured.ifname, 'eth0');
  assert.equal(configured.changed, true);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  assert.equal(await lab.resolvConf(), 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n');
  const s1 = await lab.status();
  assert.equal(s1?.status, 'ok');
  assert.equal(s1?.detail, 'eth0 10.137.0.7/32 fd09:24ef:4179::a89:7/128');

  await lab.settled();
  const before = await lab.dump();
  const resolvMtime = (await stat(lab.client.hostPath('/etc/resolv.conf'))).mtimeMs;
  const second = await lab.cli(['apply']);
  assert.equal(second.code, 0, second.stdout);
  assert.equal(second.logs.find((l) => l.msg === 'uplink configured')?.changed, false, second.stdout);
  assert.equal(await lab.dump(), before);
  assert.equal((await stat(lab.client.hostPath('/etc/resolv.conf'))).mtimeMs, resolvMtime);
  const s2 = await lab.status();
  assert.notEqual(s2?.generation, s1?.generation, 'every apply writes a new generation');

  const status = await lab.cli(['status', '--json']);
  assert.equal(status.code, 0, status.stdout);
  const report = JSON.parse(status.stdout.split('\n').find((l) => l.startsWith('{"matches"'))!);
  assert.equal(report.matches, true);
  assert.deepEqual(report.pending, []);
});

test('after apply the client reaches its gateway (IPv4 and IPv6)', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  assert.equal(await ping(lab.client, '10.137.0.3', { timeoutMs: 5000 }), true);
  assert.equal(await ping(lab.client, 'fd09:24ef:4179::a89:3', { timeoutMs: 5000 }), true);
});

test('an IP change in a later process removes the old address (ownership survives restarts); foreign state stays', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  // Something else's address and route on the same link: never ours to remove.
  await lab.client.exec('ip', ['address', 'add', '192.168.77.1/32', 'dev', 'eth0']);
  await lab.client.exec('ip', ['route', 'add', '192.168.78.0/24', 'dev', 'eth0']);
  await lab.writeKeys({ '/qubes-ip': '10.137.0.8', '/qubes-ip6': undefined, '/qubes-gateway6': undefined });
  const res = await lab.cli(['apply']);
  assert.equal(res.code, 0, res.stdout);
  const s = await lab.eth0();
  assert.deepEqual(s.addresses, ['10.137.0.8/32', '192.168.77.1/32']);
  assert.deepEqual(s.routes4, ['10.137.0.3 scope link', '192.168.78.0/24 scope link', 'default via 10.137.0.3 onlink'].sort());
  assert.deepEqual(s.routes6, []);
  assert.deepEqual(s.neighbours, ['10.137.0.3 fe:ff:ff:ff:ff:ff']);
  const status = await lab.cli(['status']);
  assert.equal(status.code, 0, status.stdout);
  assert.match(status.stdout, /configured as QubesDB says/);
  await lab.client.exec('ip', ['address', 'del', '192.168.77.1/32', 'dev', 'eth0']);
});

test('IP change inside one /24: the kernel drops the new secondary with the old primary, the agent re-plans and converges', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.client.exec('sh', ['-c', 'echo 0 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries']);
  await lab.writeAppendixA({ '/qubes-netmask': '255.255.255.0', '/qubes-ip6': undefined, '/qubes-gateway6': undefined });
  assert.equal((await lab.cli(['apply'])).code, 0);
  await lab.writeKeys({ '/qubes-ip': '10.137.0.8' });
  const res = await lab.cli(['apply']);
  assert.equal(res.code, 0, res.stdout);
  const s = await lab.eth0();
  assert.deepEqual(s.addresses, ['10.137.0.8/24']);
  assert.deepEqual(s.routes4, ['10.137.0.3 scope link', 'default via 10.137.0.3 onlink']);
  assert.deepEqual(s.neighbours, ['10.137.0.3 fe:ff:ff:ff:ff:ff']);
  const second = await lab.cli(['apply']);
  assert.equal(second.logs.find((l) => l.msg === 'uplink configured')?.changed, false, second.stdout);
});

test('IPv6 disabled on the uplink: IPv4 only, with a warning, and no error', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.client.exec('sh', ['-c', 'echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6']);
  t.after(() => lab.client.exec('sh', ['-c', 'echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6']));
  await lab.writeAppendixA();
  const res = await lab.cli(['apply']);
  assert.equal(res.code, 0, res.stdout);
  assert.ok(res.logs.some((l) => l.level === 40 && l.msg === 'IPv6 is disabled on the uplink, configuring IPv4 only'), res.stdout);
  const s = await lab.eth0();
  assert.deepEqual(s.addresses, ['10.137.0.7/32']);
  assert.deepEqual(s.routes6, []);
  assert.equal((await lab.status())?.status, 'ok');
});

test('status reports a mismatch with exit 1', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  await lab.client.exec('ip', ['route', 'del', 'default', 'via', '10.137.0.3', 'dev', 'eth0']);
  const res = await lab.cli(['status']);
  assert.equal(res.code, 1, res.stdout);
  assert.match(res.stdout, /pending +add route default via 10\.137\.0\.3/);
  assert.match(res.stdout, /DOES NOT MATCH/);
});

test('resolv.conf: a protected file and disable-dns-server are left alone; a symlink is replaced', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  const resolv = lab.client.hostPath('/etc/resolv.conf');
  await writeFile(resolv, 'nameserver 9.9.9.9\n');
  const protDir = lab.client.hostPath('/rw/config/protected-files.d');
  await mkdir(protDir, { recursive: true });
  await writeFile(`${protDir}/dns.conf`, '/etc/resolv.conf\n');
  t.after(() => rm(protDir, { recursive: true, force: true }));
  await lab.writeAppendixA();
  const prot = await lab.cli(['apply']);
  assert.equal(prot.code, 0, prot.stdout);
  assert.ok(prot.logs.some((l) => l.msg === 'resolv.conf is protected, left alone'), prot.stdout);
  assert.equal(await lab.resolvConf(), 'nameserver 9.9.9.9\n');
  await rm(protDir, { recursive: true, force: true });

  await lab.writeKeys({ '/qubes-service/disable-dns-server': '1' });
  assert.equal((await lab.cli(['apply'])).code, 0);
  assert.equal(await lab.resolvConf(), 'nameserver 9.9.9.9\n');

  await lab.writeKeys({ '/qubes-service/disable-dns-server': '0', '/qubes-primary-dns': undefined, '/qubes-secondary-dns': undefined });
  const res = await lab.cli(['apply']);
  // The qube's /etc/resolv.conf is a bind-mounted file: the rename fails with EBUSY and the
  // agent falls back to writing in place, saying so.
  assert.ok(res.logs.some((l) => l.msg === 'resolv.conf written in place (cannot rename onto it: bind mount)'), res.stdout);
  assert.equal(await lab.resolvConf(), 'nameserver 10.137.0.3\n', 'primary DNS defaults to the gateway, no empty line');

  // A path that is not a mount point gets the atomic temp+rename, which replaces a symlink.
  const dir = lab.client.hostPath('/rw/resolv-test');
  await mkdir(dir, { recursive: true });
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(`${dir}/stub`, 'nameserver 127.0.0.53\n');
  await lab.client.exec('ln', ['-sf', '/rw/resolv-test/stub', '/rw/resolv-test/resolv.conf']);
  const sym = await lab.cli(['apply', '--resolv-conf', '/rw/resolv-test/resolv.conf']);
  assert.ok(sym.logs.some((l) => l.msg === 'resolv.conf written' && l.replacedSymlink === true), sym.stdout);
  assert.equal(await readFile(`${dir}/resolv.conf`, 'utf8'), 'nameserver 10.137.0.3\n');
  assert.equal(await readFile(`${dir}/stub`, 'utf8'), 'nameserver 127.0.0.53\n');
});

test('disable-default-route: gateway host routes only', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA({ '/qubes-service/disable-default-route': '1' });
  assert.equal((await lab.cli(['apply'])).code, 0);
  const s = await lab.eth0();
  assert.deepEqual(s.routes4, ['10.137.0.3 scope link']);
  assert.deepEqual(s.routes6, ['fd09:24ef:4179::a89:3']);
  await lab.writeKeys({ '/qubes-service/disable-default-route': '0' });
});

test('remove takes the link down and removes what we configured', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  const res = await lab.cli(['remove', 'eth0']);
  assert.equal(res.code, 0, res.stdout);
  const s = await lab.eth0();
  assert.deepEqual({ up: s.up, a: s.addresses, r4: s.routes4, r6: s.routes6, n: s.neighbours }, { up: false, a: [], r4: [], r6: [], n: [] });
  assert.equal((await lab.status())?.status, 'unconfigured');
});

test('apply without the interface exits 3; usage errors exit 64', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  const res = await lab.cli(['apply', 'eth9']);
  assert.equal(res.code, 3, res.stdout);
  assert.equal((await lab.status())?.detail, 'eth9 interface missing');
  assert.equal((await lab.cli(['apply', '-x'])).code, 64);
  assert.equal((await lab.cli(['remove'])).code, 64);
  assert.equal((await lab.cli(['apply', 'eth0;reboot'])).code, 64);
});

test('in a qube that provides network: the ip-change hook runs and the driver is told to re-learn DNS', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  const hookDir = lab.client.hostPath('/rw/config');
  await mkdir(hookDir, { recursive: true });
  const hook = `${hookDir}/qubes-ip-change-hook`;
  await writeFile(hook, '#!/bin/sh\necho ran >> /rw/config/hook-ran\n');
  await chmod(hook, 0o755);
  const sockDir = lab.client.hostPath('/run/qubes-net');
  await mkdir(sockDir, { recursive: true });
  const requests: string[] = [];
  const server: Server = createServer((c) => {
    c.on('data', (b) => {
      requests.push(b.toString());
      c.end('{"ok":true}\n');
    });
  });
  await new Promise<void>((r) => server.listen(`${sockDir}/driver.sock`, r));
  t.after(async () => {
    await new Promise((r) => server.close(r));
    await rm(hook, { force: true });
    await rm(`${hookDir}/hook-ran`, { force: true });
    await lab.db.rm('/qubes-netvm-network');
  });
  await lab.writeAppendixA({ '/qubes-netvm-network': '10.137.0.7' });
  const res = await lab.cli(['apply']);
  assert.equal(res.code, 0, res.stdout);
  assert.deepEqual(requests, ['{"op":"dns-changed"}\n']);
  assert.ok(res.logs.some((l) => l.msg === 'ip change hook ran'), res.stdout);
  assert.equal(await readFile(`${hookDir}/hook-ran`, 'utf8'), 'ran\n');
  await waitFor('driver told', () => requests.length === 1);
});

test('a link that is not a Xen frontend is left alone unless QUBES_NET_UPLINK_DRIVERS allows its driver', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  const before = await lab.dump();
  // No override: eth0 is a veth (no device, driver "none"), as a physical NIC would be refused.
  const res = await lab.client.exec(process.execPath, [CLI, 'apply', 'eth0'], { allowFailure: true, env: { QUBES_NET_LOG_LEVEL: 'debug' } });
  assert.equal(res.exitCode, 3, res.stdout);
  const err = parseLogLines(res.stdout).find((l) => l.msg === 'not an uplink, left alone');
  assert.equal(err?.driver, 'none', res.stdout);
  assert.equal(await lab.dump(), before, 'nothing changed');
  const ok = await lab.cli(['apply', 'eth0']);
  assert.equal(ok.code, 0, ok.stdout);
});

test('concurrent applies (udev, the watcher, an admin) wait for each other and converge', async (t) => {
  if (!needRoot(t)) return;
  await reset();
  await lab.writeAppendixA();
  const results = await Promise.all([lab.cli(['apply', 'eth0']), lab.cli(['apply', 'eth0']), lab.cli(['apply'])]);
  for (const r of results) assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  // Each batch was planned from the state the previous one left: exactly one made changes.
  assert.equal(results.filter((r) => r.logs.some((l) => l.msg === 'uplink configured' && l.changed === true)).length, 1, results.map((r) => r.stdout).join('\n'));
});
