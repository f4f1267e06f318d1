// DNS redirection end to end: dnsmasq upstreams in the fake internet, the driver's
// resolv.conf replaced by rename, queries from a client through 10.139.1.1/.2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { dnsQuery, INTERNET, type DnsResult } from '@qubes-net/netns';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { DriverLab, type Client } from './lab.js';

let lab: DriverLab;
let c: Client;
let hupWatcher: ChildProcess | undefined;
const [DNS1, DNS2] = INTERNET.dns4;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-dns');
  c = await lab.addClient('client', 21);
  // A stand-in for the firewall daemon: counts the SIGHUPs the driver sends.
  // Named like the firewall: the driver signals only a process that is one (13.5).
  hupWatcher = lab.netvm.spawn('bash', ['-c', `exec -a qubes-net-firewall bash -c 'trap "echo hup >> /run/qn-drv/hups" HUP; while :; do sleep 0.05; done'`]);
  await writeFile(lab.netvm.hostPath('/run/qubes-net-fw.pid'), `${hupWatcher.pid}\n`);
  await lab.startDaemonReady(['--firewall-pid', '/run/qubes-net-fw.pid']);
  await lab.online(c);
});

after(async () => {
  hupWatcher?.kill('SIGKILL');
  await lab?.destroy();
});

async function upstreamKey(): Promise<string | undefined> {
  return lab.db.read('/qubes-dns-upstream');
}

async function hups(): Promise<number> {
  return (await readFile(lab.netvm.hostPath('/run/qn-drv/hups'), 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
}

test('two upstream servers: 10.139.1.1 → first, 10.139.1.2 → second', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await upstreamKey(), `${DNS1} ${DNS2}`);
  await lab.internet.clearQueryLog();
  assert.equal((await dnsQuery(c.qube, '10.139.1.1', 'example.test')).rcode, 'NOERROR');
  assert.equal((await dnsQuery(c.qube, '10.139.1.2', 'www.example.test')).rcode, 'NOERROR');
  const log = await lab.internet.queryLog();
  assert.deepEqual(log.filter((e) => e.name === 'example.test').map((e) => e.server), [DNS1]);
  assert.deepEqual(log.filter((e) => e.name === 'www.example.test').map((e) => e.server), [DNS2]);
  const tcp = await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'dnat-dns']);
  assert.match(tcp.stdout, /ip daddr 10\.139\.1\.2 tcp dport 53 dnat to 198\.51\.100\.54/);
});

test('an upstream change (resolv.conf replaced by rename) under a query stream: zero failures', async (t) => {
  if (!needRoot(t)) return;
  const hupsBefore = await hups();
  await lab.internet.clearQueryLog();
  const results: DnsResult[] = [];
  let stop = false;
  const stream = (async () => {
    for (let i = 0; !stop; i++) results.push(await dnsQuery(c.qube, i % 2 ? '10.139.1.2' : '10.139.1.1', 'example.test', 'A', { timeoutMs: 3000 }));
  })();
  await waitFor('a few queries before the change', () => results.length >= 4);
  await lab.replaceResolv(`# new lease\nnameserver ${DNS2}\n`);
  await waitFor('upstream key follows', async () => (await upstreamKey()) === DNS2);
  const at = results.length;
  await waitFor('queries after the change', () => results.length >= at + 6);
  stop = true;
  await stream;
  assert.ok(results.length >= 10);
  assert.deepEqual(results.filter((r) => r.rcode !== 'NOERROR'), [], 'no failed query');
  const log = await lab.internet.queryLog();
  assert.ok(log.some((e) => e.server === DNS2));
  const lastFew = log.slice(-4);
  assert.ok(lastFew.every((e) => e.server === DNS2), 'after the change everything goes to the new server');
  await waitFor('firewall told (SIGHUP)', async () => (await hups()) > hupsBefore);
});

test('one upstream server: both virtual addresses map to it', async (t) => {
  if (!needRoot(t)) return;
  await lab.setResolv([DNS1]);
  await waitFor('mapping to one server', async () => (await upstreamKey()) === DNS1);
  await lab.internet.clearQueryLog();
  for (const v of ['10.139.1.1', '10.139.1.2']) assert.equal((await dnsQuery(c.qube, v, 'other.example.test')).rcode, 'NOERROR', v);
  assert.deepEqual((await lab.internet.queryLog()).map((e) => e.server), [DNS1, DNS1]);
});

test('zero usable upstream servers: both virtual addresses dropped, nothing leaks', async (t) => {
  if (!needRoot(t)) return;
  for (const [label, text] of [['empty', ''], ['loopback only (resolved stub)', 'nameserver 127.0.0.53\n'], ['own address', 'nameserver 192.0.2.2\n'], ['virtual only', 'nameserver 10.139.1.1\n']] as const) {
    await lab.setResolv([DNS1]);
    await waitFor('back to one server', async () => (await upstreamKey()) === DNS1);
    await lab.replaceResolv(text);
    await waitFor(`${label}: dropped`, async () => (await upstreamKey()) === '');
    await lab.internet.clearQueryLog();
    for (const v of ['10.139.1.1', '10.139.1.2']) assert.equal((await dnsQuery(c.qube, v, 'example.test', 'A', { timeoutMs: 500 })).rcode, 'TIMEOUT', `${label} ${v}`);
    assert.equal(await lab.internet.queryCount(), 0, `${label}: no query left the netvm`);
  }
  const chain = await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'dnat-dns']);
  assert.match(chain.stdout, /ip daddr 10\.139\.1\.1 udp dport 53 counter packets [1-9]\d* bytes \d+ drop/);
});

test('garbage resolv.conf: a clear error naming the file, DNS dropped, daemon keeps running', async (t) => {
  if (!needRoot(t)) return;
  await lab.setResolv([DNS1]);
  await waitFor('one server', async () => (await upstreamKey()) === DNS1);
  await lab.replaceResolv('nameserver 198.51.100.999\nnameserver $(reboot)\n\0\xff garbage');
  await waitFor('dropped', async () => (await upstreamKey()) === '');
  const err = lab.logs('invalid DNS source').find((l) => l.source === 'resolv.conf');
  assert.ok(err, 'an error event for resolv.conf');
  assert.equal(err.level, 50);
  assert.match(String(err.key), /resolv\.conf/);
  assert.ok(String(err.value).length < 150);
  assert.equal(lab.daemon?.child.exitCode, null, 'still running');
  await lab.setResolv([DNS1, DNS2]);
  await waitFor('recovers', async () => (await upstreamKey()) === `${DNS1} ${DNS2}`);
  assert.equal((await dnsQuery(c.qube, '10.139.1.1', 'example.test')).rcode, 'NOERROR');
});

test('dns-changed: the chain is replaced only when the mapping changed', async (t) => {
  if (!needRoot(t)) return;
  const same = await lab.cli(['dns-changed', '--json']);
  assert.equal(same.code, 0);
  assert.equal(JSON.parse(same.stdout).changed, false);
  const handles = (await lab.netvm.exec('nft', ['-a', 'list', 'chain', 'ip', 'qubes', 'dnat-dns'])).stdout;
  await lab.cli(['dns-changed']);
  assert.equal((await lab.netvm.exec('nft', ['-a', 'list', 'chain', 'ip', 'qubes', 'dnat-dns'])).stdout, handles, 'untouched');
});

test('virtual DNS addresses follow QubesDB', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeKeys({ '/qubes-netvm-secondary-dns': undefined });
  await waitFor('only the primary is mapped', async () => !(await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'dnat-dns'])).stdout.includes('10.139.1.2'));
  await lab.writeKeys({ '/qubes-netvm-secondary-dns': '10.139.1.2' });
  await waitFor('both again', async () => (await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes', 'dnat-dns'])).stdout.includes('10.139.1.2'));
  assert.equal((await dnsQuery(c.qube, '10.139.1.2', 'example.test')).rcode, 'NOERROR');
});

test('an address the uplink gains is never a DNAT target from then on (followed without restart)', async (t) => {
  if (!needRoot(t)) return;
  await lab.setResolv(['192.0.2.77', DNS2]);
  await waitFor('mapped to the future own address', async () => (await upstreamKey()) === `192.0.2.77 ${DNS2}`);
  await lab.netvm.exec('ip', ['addr', 'add', '192.0.2.77/24', 'dev', 'eth0']);
  try {
    await waitFor('own address dropped from the mapping', async () => (await upstreamKey()) === DNS2);
    assert.ok(lab.logs('DNS server not used').some((l) => l.server === '192.0.2.77' && l.reason === 'own address'));
  } finally {
    await lab.netvm.exec('ip', ['addr', 'del', '192.0.2.77/24', 'dev', 'eth0']);
    await lab.setResolv([DNS1, DNS2]);
  }
});

test('systemd-resolved in use (stub in resolv.conf): its real servers are used and followed', async (t) => {
  if (!needRoot(t)) return;
  await lab.stopDaemon();
  const dir = lab.netvm.hostPath('/run/qn-drv/resolve');
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/resolv.conf`, `# resolved's list of real servers\nnameserver ${DNS2}\n`);
  await lab.setResolv(['127.0.0.53'], 'options edns0 trust-ad\n');
  // No D-Bus in the qube: busctl fails and the driver reads resolved's own resolv.conf.
  await lab.startDaemonReady(['--firewall-pid', '/run/qubes-net-fw.pid', '--resolved-dir', '/run/qn-drv/resolve']);
  await waitFor('mapped to resolved\'s server', async () => (await upstreamKey()) === DNS2);
  assert.equal((await dnsQuery(c.qube, '10.139.1.1', 'example.test')).rcode, 'NOERROR');
  await writeFile(`${dir}/resolv.conf`, `nameserver ${DNS1}\n`);
  await waitFor('follows resolved', async () => (await upstreamKey()) === DNS1);
  const s = await lab.status();
  assert.equal(s.dns.source, '/run/qn-drv/resolve/resolv.conf');
  await lab.stopDaemon();
  await lab.setResolv([DNS1, DNS2]);
  await lab.startDaemonReady(['--firewall-pid', '/run/qubes-net-fw.pid']);
});

test('a DNS change purges the DNATed flows to the old server; a stale firewall pid file signals nobody', async (t) => {
  if (!needRoot(t)) return;
  // A DNATed query flow as conntrack holds it: original destination the virtual address.
  await lab.netvm.exec('conntrack', ['-I', '-s', c.ip, '-d', '10.139.1.1', '-p', 'udp', '--sport', '40000', '--dport', '53', '-t', '600']);
  await lab.netvm.exec('conntrack', ['-I', '-s', c.ip, '-d', '203.0.113.80', '-p', 'tcp', '--sport', '40001', '--dport', '80', '--state', 'ESTABLISHED', '-t', '600', '-u', 'ASSURED']);
  // The pid file now names an unrelated process (the firewall died, its pid was reused).
  const bystander = lab.netvm.spawn('sleep', ['1000']);
  await writeFile(lab.netvm.hostPath('/run/qubes-net-fw.pid'), `${bystander.pid}\n`);
  try {
    await lab.setResolv([DNS2]);
    await waitFor('mapped to the new server', async () => (await upstreamKey()) === DNS2);
    await waitFor('flow to the virtual DNS address purged', async () => !/dst=10\.139\.1\.1 /.test((await lab.netvm.exec('conntrack', ['-L'], { allowFailure: true })).stdout));
    assert.match((await lab.netvm.exec('conntrack', ['-L'], { allowFailure: true })).stdout, /dst=203\.0\.113\.80/, 'other flows stay');
    assert.ok(lab.logs('firewall notified of DNS change').some((l) => l.result === 'not-the-firewall'));
    assert.equal(bystander.exitCode, null, 'the bystander got no SIGHUP (it would have died)');
    assert.equal(bystander.signalCode, null);
  } finally {
    bystander.kill('SIGKILL');
    await writeFile(lab.netvm.hostPath('/run/qubes-net-fw.pid'), `${hupWatcher!.pid}\n`);
    await lab.setResolv([DNS1, DNS2]);
    await waitFor('back to both servers', async () => (await upstreamKey()) === `${DNS1} ${DNS2}`);
  }
});
