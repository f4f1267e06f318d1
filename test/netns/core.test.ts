// The namespace test kit against the real kernel: qubes, links, exec/spawn, private paths,
// fake xenstore, and cleanup that leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { ipJson, run } from '@qubes-net/common';
import { NetnsSession, XENSTORE_DIR } from '@qubes-net/netns';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { hostNetworkSnapshot, leftovers, processAlive } from './helpers.js';

async function session(t: import('node:test').TestContext, label: string): Promise<NetnsSession> {
  const s = await NetnsSession.create(label);
  t.after(() => s.destroy());
  return s;
}

test('two qubes linked vif12.0/eth0 reach each other over IPv4 and IPv6', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-link');
  const [netvm, client] = await Promise.all([s.qube('netvm'), s.qube('client')]);
  assert.equal(netvm.netns, `${s.id}-netvm`);
  assert.equal(s.getQube('client'), client);
  await s.link(netvm, 'vif12.0', client, 'eth0', { aMac: 'fe:ff:ff:ff:ff:ff', bMac: '00:16:3e:5e:6c:00' });
  const [vif] = await ipJson<{ address: string; operstate: string }[]>(['link', 'show', 'vif12.0'], { netns: netvm.netns });
  assert.equal(vif!.address, 'fe:ff:ff:ff:ff:ff');
  const [eth0] = await ipJson<{ address: string }[]>(['link', 'show', 'eth0'], { netns: client.netns });
  assert.equal(eth0!.address, '00:16:3e:5e:6c:00');
  assert.ok(await netvm.ifaceExists('vif12.0'));
  assert.equal(await netvm.ifaceExists('eth0'), false);

  await netvm.exec('ip', ['addr', 'add', '10.137.0.1/24', 'dev', 'vif12.0']);
  await netvm.exec('ip', ['addr', 'add', 'fd09:24ef:4179::1/64', 'dev', 'vif12.0', 'nodad']);
  await client.exec('ip', ['addr', 'add', '10.137.0.7/24', 'dev', 'eth0']);
  await client.exec('ip', ['addr', 'add', 'fd09:24ef:4179::7/64', 'dev', 'eth0', 'nodad']);
  const v4 = await client.exec('qn-ping', ['-c', '1', '-W', '3000', '10.137.0.1'], { allowFailure: true });
  assert.equal(v4.exitCode, 0, v4.stdout + v4.stderr);
  assert.deepEqual(JSON.parse(v4.stdout), { address: '10.137.0.1', sent: 1, received: 1 });
  const v6 = await netvm.exec('qn-ping', ['-W', '3000', 'fd09:24ef:4179::7'], { allowFailure: true });
  assert.equal(v6.exitCode, 0, v6.stdout + v6.stderr);
  const none = await client.exec('qn-ping', ['-W', '200', '10.137.0.99'], { allowFailure: true });
  assert.equal(none.exitCode, 1);

  await s.unlink(client, 'eth0');
  assert.equal(await netvm.ifaceExists('vif12.0'), false, 'both veth ends go');
  await s.unlink(client, 'eth0'); // absent: tolerated
});

test('interface names are validated and links to foreign qubes refused', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-names');
  const other = await session(t, 'core-names2');
  const [a, b] = await Promise.all([s.qube('a'), s.qube('b')]);
  const foreign = await other.qube('a');
  await assert.rejects(s.link(a, 'bad/name', b, 'eth0'), /invalid interface name/);
  await assert.rejects(s.link(a, 'x'.repeat(16), b, 'eth0'), /invalid interface name/);
  await assert.rejects(s.link(a, 'eth1', b, 'eth0', { aMac: 'not-a-mac' }), /invalid MAC/);
  await assert.rejects(s.link(a, 'eth1', foreign, 'eth0'), /does not belong/);
  await assert.rejects(s.qube('A_B'), /invalid qube name/);
  await assert.rejects(s.qube('a'), /already exists/);
  assert.equal(await b.ifaceExists('eth0'), false);
});

test('hostPath maps /run, /var/run, /rw, /etc/qubes and /etc/resolv.conf both ways', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-paths');
  const q = await s.qube('q');
  const other = await s.qube('other');
  // inside → host
  await q.exec('sh', ['-c', 'printf "nameserver 10.139.1.1\\n" > /etc/resolv.conf && mkdir -p /run/qubes && echo inside > /run/qubes/x && echo rw > /rw/f && echo eq > /etc/qubes/g']);
  assert.equal(await readFile(q.hostPath('/etc/resolv.conf'), 'utf8'), 'nameserver 10.139.1.1\n');
  assert.equal(await readFile(q.hostPath('/run/qubes/x'), 'utf8'), 'inside\n');
  assert.equal(await readFile(q.hostPath('/var/run/qubes/x'), 'utf8'), 'inside\n');
  assert.equal(await readFile(q.hostPath('/rw/f'), 'utf8'), 'rw\n');
  assert.equal(await readFile(q.hostPath('/etc/qubes/g'), 'utf8'), 'eq\n');
  const hostHadService = existsSync('/run/qubes-service/qubes-firewall');
  // host → inside (in place: the qube sees the bind-mounted inode)
  await writeFile(q.hostPath('/etc/resolv.conf'), 'nameserver 192.0.2.53\n');
  await mkdir(q.hostPath('/run/qubes-service'), { recursive: true });
  await writeFile(q.hostPath('/run/qubes-service/qubes-firewall'), '');
  const seen = await q.exec('sh', ['-c', 'cat /etc/resolv.conf; ls /var/run/qubes-service']);
  assert.equal(seen.stdout, 'nameserver 192.0.2.53\nqubes-firewall\n');
  // private: the other qube and the host's own files are untouched
  const otherView = await other.exec('sh', ['-c', 'cat /etc/resolv.conf; ls /run']);
  assert.equal(otherView.stdout, '');
  assert.notEqual(await readFile('/etc/resolv.conf', 'utf8'), 'nameserver 192.0.2.53\n');
  assert.equal(hostHadService || !existsSync('/run/qubes-service/qubes-firewall'), true, 'not written to the host /run');
  // renaming onto the bind-mounted resolv.conf fails (agents must write in place)
  const mv = await q.exec('sh', ['-c', 'echo new > /etc/resolv.conf.tmp && mv /etc/resolv.conf.tmp /etc/resolv.conf'], { allowFailure: true });
  assert.notEqual(mv.exitCode, 0);
  assert.throws(() => q.hostPath('/etc/passwd'), /not private/);
  assert.throws(() => q.hostPath('/run/../etc/passwd'), /\.\./);
  assert.throws(() => q.hostPath('relative'), /absolute/);
});

test('/sys/class/net inside a qube shows only its own interfaces', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-sys');
  const [a, b] = await Promise.all([s.qube('a'), s.qube('b')]);
  await s.link(a, 'vif5.0', b, 'eth0');
  assert.deepEqual((await a.exec('ls', ['/sys/class/net'])).stdout.split('\n').filter(Boolean).sort(), ['lo', 'vif5.0']);
  assert.deepEqual((await b.exec('ls', ['/sys/class/net'])).stdout.split('\n').filter(Boolean).sort(), ['eth0', 'lo']);
  const mac = (await b.exec('cat', ['/sys/class/net/eth0/address'])).stdout.trim();
  const [eth0] = await ipJson<{ address: string }[]>(['link', 'show', 'eth0'], { netns: b.netns });
  assert.equal(mac, eth0!.address);
});

test('ip, nft, sysctl and conntrack work inside a qube and stay inside', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-tools');
  const q = await s.qube('q');
  await q.exec('sysctl', ['-w', 'net.ipv4.ip_forward=1']);
  assert.equal((await q.exec('cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
  const table = `qn_probe_${s.id.slice(-6)}`;
  await q.exec('nft', ['-f', '-'], { input: `table ip ${table} { chain c { type filter hook input priority 0; policy accept; }; }\n` });
  assert.match((await q.exec('nft', ['list', 'tables'])).stdout, new RegExp(`table ip ${table}`));
  assert.doesNotMatch((await run('nft', ['list', 'tables'])).stdout, new RegExp(table));
  const env = await q.exec('sh', ['-c', 'echo "$FOO"; command -v xenstore-read'], { env: { FOO: 'bar' } });
  assert.match(env.stdout, /^bar\n\/.*\/packages\/netns\/bin\/xenstore-read\n$/);
  const prefix = q.commandPrefix();
  const viaPrefix = await run(prefix[0]!, [...prefix.slice(1), 'sh', '-c', 'ls /sys/class/net; command -v qn-ping']);
  assert.match(viaPrefix.stdout, /^lo\n.*qn-ping\n$/s);
  const echo = q.spawn('sh', ['-c', 'head -c 200000 /dev/zero | tr "\\0" x; echo; echo done >&2']);
  await new Promise((resolve) => echo.once('exit', resolve));
  assert.equal(echo.exitCode, 0, 'unread output does not block the child');
  assert.equal(q.outputOf(echo).stderr, 'done\n');
  assert.equal(q.outputOf(echo).stdout.length, 64 * 1024);
  const ct = await q.exec('conntrack', ['-L'], { allowFailure: true });
  assert.equal(ct.exitCode, 0, ct.stderr);
  await q.exec('ip', ['link', 'add', 'qnv0', 'type', 'veth', 'peer', 'name', 'qnv1']);
  assert.ok(await q.ifaceExists('qnv1'));
  assert.deepEqual((await ipJson<unknown[]>(['link', 'show', 'qnv0'], {}).catch(() => [])), [], 'not in the host namespace');
});

test('fake xenstore round-trips between the qube and the host', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-xs');
  const q = await s.qube('q');
  await q.xenstoreWrite('/local/domain/0/backend/vif/12/0/ip', '10.137.0.7 fd09:24ef:4179::a89:7');
  const r = await q.exec('xenstore-read', ['/local/domain/0/backend/vif/12/0/ip']);
  assert.equal(r.stdout, '10.137.0.7 fd09:24ef:4179::a89:7\n');
  await q.exec('xenstore-write', ['device/vif/0/mac', '00:16:3e:5e:6c:00', 'name', 'work']);
  assert.equal(await q.xenstoreRead('device/vif/0/mac'), '00:16:3e:5e:6c:00');
  assert.equal(await readFile(`${q.hostPath(XENSTORE_DIR)}/name`, 'utf8'), 'work');
  assert.equal((await q.exec('xenstore-exists', ['device/vif/0/mac'], { allowFailure: true })).exitCode, 0);
  assert.equal((await q.exec('xenstore-read', ['device/vif/0'])).stdout, '\n', 'a parent reads as empty');
  const missing = await q.exec('xenstore-read', ['device/vif/1/mac'], { allowFailure: true });
  assert.equal(missing.exitCode, 1);
  assert.equal((await q.exec('xenstore-exists', ['device/vif/1'], { allowFailure: true })).exitCode, 1);
  // values with spaces, newlines and shell characters survive
  await q.exec('xenstore-write', ['odd', 'a b\n$(x) `y` \'q\'']);
  assert.equal(await q.xenstoreRead('odd'), 'a b\n$(x) `y` \'q\'');
  for (const bad of ['../etc/x', 'a/../../b', 'a//b', 'a/./b', 'a b']) {
    const w = await q.exec('xenstore-write', [bad, 'v'], { allowFailure: true });
    assert.equal(w.exitCode, 1, `xenstore-write ${bad}`);
    await assert.rejects(q.xenstoreWrite(bad, 'v'), /invalid xenstore path/);
  }
  assert.equal((await q.exec('xenstore-write', ['only-key'], { allowFailure: true })).exitCode, 1);
  await q.exec('xenstore-rm', ['device/vif/0']);
  assert.equal(await q.xenstoreRead('device/vif/0/mac'), undefined);
  assert.equal((await q.exec('xenstore-rm', ['device/vif/0'], { allowFailure: true })).exitCode, 1);
  await q.xenstoreRm('name');
  await q.xenstoreRm('name'); // host side tolerates absence
  assert.equal((await q.exec('xenstore-exists', ['name'], { allowFailure: true })).exitCode, 1);
});

test('spawned and background processes die with their qube; the peer veth goes at once', async (t) => {
  if (!needRoot(t)) return;
  const s = await session(t, 'core-procs');
  const [netvm, client] = await Promise.all([s.qube('netvm'), s.qube('client')]);
  await s.link(netvm, 'vif7.0', client, 'eth0');
  // a program that ignores SIGTERM, to exercise the SIGKILL path
  const stubborn = client.spawn('sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 1; done'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await waitFor('stubborn started', () => new Promise<boolean>((resolve) => stubborn.stdout!.once('data', () => resolve(true))));
  // a detached grandchild started by exec, not tracked by spawn
  const bg = await client.exec('sh', ['-c', 'sleep 600 >/dev/null 2>&1 & echo $!']);
  const bgPid = Number(bg.stdout.trim());
  assert.ok(processAlive(bgPid));
  const exited = new Promise((resolve) => stubborn.once('exit', resolve));
  await s.removeQube('client');
  await exited;
  assert.equal(processAlive(bgPid), false);
  assert.equal(processAlive(stubborn.pid!), false);
  assert.equal(await netvm.ifaceExists('vif7.0'), false, 'the netvm end is gone when removeQube returns');
  assert.equal(s.getQube('client'), undefined);
  assert.deepEqual(leftovers(s.id).filter((l) => l.includes('client')), []);
  await s.removeQube('client'); // idempotent
  const sleeper = netvm.spawn('sleep', ['600']);
  await s.destroy();
  assert.equal(processAlive(sleeper.pid!), false);
});

test('destroy leaves no namespace, mount or directory, and the host network is unchanged', async (t) => {
  if (!needRoot(t)) return;
  const before = await hostNetworkSnapshot();
  const s = await NetnsSession.create('core-destroy');
  t.after(() => s.destroy());
  const [a, b, c] = await Promise.all([s.qube('netvm'), s.qube('fw'), s.qube('app')]);
  await s.link(a, 'vif1.0', b, 'eth0');
  await s.link(b, 'vif2.0', c, 'eth0');
  await b.exec('ip', ['addr', 'add', '10.1.2.3/24', 'dev', 'eth0']);
  await c.exec('ip', ['route', 'add', 'default', 'dev', 'eth0']);
  // a nested namespace made inside a qube (as the driver does for fake-ip NAT)
  await b.exec('ip', ['netns', 'add', 'vif2.0-nat']);
  assert.ok(leftovers(s.id).length > 0);
  await s.destroy();
  await s.destroy(); // idempotent
  assert.deepEqual(leftovers(s.id), []);
  assert.equal(await hostNetworkSnapshot(), before);
  await assert.rejects(s.qube('late'), /destroyed/);
});
