// DNS redirected to a resolver in the network qube itself (issue 16.1): a "sys-dns" setup where
// sys-firewall runs its own resolver on 127.0.0.1 and lists it in resolv.conf. The virtual DNS
// addresses are DNATed to it (route_localnet on the vifs only), and its clients resolve.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import type { ChildProcess } from 'node:child_process';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { dnsQuery, dnsmasqArgs, type DnsResult } from '@qubes-net/netns';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;
let resolver: ChildProcess | undefined;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: c1, qid: 7, netvm: sys-firewall }
`), 'dnslocal');
});

after(async () => {
  resolver?.kill('SIGKILL');
  await L?.destroy();
});

/** Tells the qube's network agent that DNS changed, as NetworkManager's dispatcher would. */
async function dnsChanged(q: string): Promise<void> {
  const ns = L.ns(q);
  for (const path of ['/run/qubes-net/agent.sock', '/run/qubes-net/driver.sock']) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(ns.hostPath(path));
      sock.on('error', () => resolve(false));
      sock.on('connect', () => sock.write(JSON.stringify({ op: 'sync', reason: 'dns changed' }) + '\n'));
      sock.on('data', () => { sock.destroy(); resolve(true); });
    });
    if (ok) return;
  }
  throw new Error(`no agent socket answered in ${q}`);
}

test('a resolver on 127.0.0.1 in sys-firewall answers the clients through the virtual DNS addresses', async (t) => {
  if (!needRoot(t)) return;
  const fw = L.ns('sys-firewall');
  await writeFile(fw.hostPath('/run/qn-local-hosts'), '192.0.2.99 sys-dns.test\n');
  resolver = fw.spawn('dnsmasq', dnsmasqArgs('127.0.0.1', { hosts: '/run/qn-local-hosts', log: '/run/qn-local-dns.log' }), { stdio: ['ignore', 'ignore', 'ignore'] });
  await writeFile(fw.hostPath('/etc/resolv.conf'), 'nameserver 127.0.0.1\n');
  await dnsChanged('sys-firewall');
  const db = L.lab.runningQube('sys-firewall').db;
  await waitFor('sys-firewall maps the virtual DNS to its own resolver', async () => (await db.read('/qubes-dns-upstream')) === '127.0.0.1');
  let r: DnsResult | undefined;
  for (const server of ['10.139.1.1', '10.139.1.2']) {
    await waitFor(`c1 resolves through ${server}`, async () => (r = await dnsQuery(L.ns('c1'), server, 'sys-dns.test', 'A', { timeoutMs: 1000 })).rcode === 'NOERROR');
    assert.deepEqual(r!.addresses, ['192.0.2.99']);
  }
  assert.equal((await L.lab.exec('c1', ['getent', 'hosts', 'sys-dns.test'])).stdout.trim().split(/\s+/)[0], '192.0.2.99');
  const localnet = await L.lab.exec('sys-firewall', ['sh', '-c', 'cat /proc/sys/net/ipv4/conf/vif*/route_localnet /proc/sys/net/ipv4/conf/eth0/route_localnet /proc/sys/net/ipv4/conf/all/route_localnet']);
  assert.deepEqual(localnet.stdout.trim().split('\n'), ['1', '0', '0'], 'route_localnet on the vif only');
  // Back to the virtual servers of sys-net: the mapping follows.
  await writeFile(fw.hostPath('/etc/resolv.conf'), 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n');
  await dnsChanged('sys-firewall');
  await waitFor('forwarded to sys-net again', async () => (await db.read('/qubes-dns-upstream')) === '10.139.1.1 10.139.1.2');
  assert.equal((await dnsQuery(L.ns('c1'), '10.139.1.1', 'www.example.test')).rcode, 'NOERROR');
});
