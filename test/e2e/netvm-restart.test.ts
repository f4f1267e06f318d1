// A netvm that restarts, is killed or crashes: its running clients get their vif back when it
// starts again (upstream 110–114). Also the upstream DNS changing under sys-net (010's "changed
// DNS IP"): the DNS redirect follows, the clients keep their virtual addresses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { INTERNET, dnsQuery, ping, tcpHold } from '@qubes-net/netns';
import { killQube, restartQube, setUpstreamDns, startQube, stopQube, sendAgentRequest } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: a, qid: 7, netvm: sys-firewall }
  - { name: b, qid: 8, netvm: sys-firewall }
`), 'restart');
});

after(async () => {
  await L?.destroy();
});

async function clientsOnline(): Promise<void> {
  for (const q of ['a', 'b']) {
    assert.equal(await ping(L.ns(q), INTERNET.web4), true, `${q}\n${await L.logs()}`);
    assert.deepEqual((await dnsQuery(L.ns(q), '10.139.1.2', 'www.example.test')).addresses, [INTERNET.web4], q);
  }
}

test('restart of the proxy: clients reattach with new vif backends', async (t) => {
  if (!needRoot(t)) return;
  const before = L.lab.runningQube('sys-firewall').domid;
  await restartQube(L.lab, 'sys-firewall');
  const fw = L.lab.runningQube('sys-firewall');
  assert.notEqual(fw.domid, before, 'a new domid, like Xen');
  assert.equal(fw.vif?.name, `vif${fw.domid}.0`);
  assert.equal(L.lab.runningQube('a').vif?.backendDomid, fw.domid);
  await clientsOnline();
});

test('kill of the proxy, then start: clients reattach', async (t) => {
  if (!needRoot(t)) return;
  await killQube(L.lab, 'sys-firewall');
  assert.equal(await ping(L.ns('a'), INTERNET.web4, { timeoutMs: 800 }), false);
  await startQube(L.lab, 'sys-firewall');
  await clientsOnline();
});

test('crash of the proxy (its processes die under it), then start: clients reattach', async (t) => {
  if (!needRoot(t)) return;
  const fw = L.lab.runningQube('sys-firewall');
  for (const p of [...fw.agents.values(), fw.qdbDaemon]) process.kill(p.pid, 'SIGKILL');
  await Promise.all([...fw.agents.values(), fw.qdbDaemon].map((p) => p.exited));
  // The toolstack notices the dead domain and destroys it.
  await killQube(L.lab, 'sys-firewall');
  await startQube(L.lab, 'sys-firewall');
  await clientsOnline();
});

test('kill of a client: its netvm unplugs it and forgets its rules', async (t) => {
  if (!needRoot(t)) return;
  const vif = L.lab.runningQube('b').vif!.name;
  await killQube(L.lab, 'b');
  const fwdb = L.lab.runningQube('sys-firewall').db;
  assert.notEqual(await fwdb.read(`/qubes-vif/${vif}/state`), 'online');
  assert.equal(await fwdb.read('/qubes-firewall/10.137.0.8'), undefined);
  assert.equal(await fwdb.read('/connected-ips'), '10.137.0.7 10.137.0.8', 'halted clients stay in /connected-ips (upstream)');
  await startQube(L.lab, 'b');
  await clientsOnline();
});

test('an agent that crashes: traffic keeps flowing, the agent comes back and works', async (t) => {
  if (!needRoot(t)) return;
  const fw = L.lab.runningQube('sys-firewall');
  const hold = await tcpHold(L.ns('a'), INTERNET.web4, INTERNET.echoPorts[0]);
  try {
    await hold.waitForMoreEchoes(2);
    // The network agent (whichever instance the watcher started) and the watcher itself.
    const st = await sendAgentRequest(fw.ns, { op: 'status' });
    const agentPid = (st.details as { pid: number }).pid;
    const watcherPid = fw.agents.get('agent')!.pid;
    process.kill(agentPid, 'SIGKILL');
    process.kill(watcherPid, 'SIGKILL');
    await hold.waitForMoreEchoes(3);
    await waitFor('agent watcher restarted', () => { const p = fw.agents.get('agent'); return !!p && p.running && p.pid !== watcherPid; });
    await hold.waitForMoreEchoes(3);
  } finally {
    await hold.stop();
  }
  // A new instance, started on demand, handles a new vif.
  await stopQube(L.lab, 'b');
  await startQube(L.lab, 'b');
  await clientsOnline();
});

test('upstream DNS change: the virtual addresses follow to the new server', async (t) => {
  if (!needRoot(t)) return;
  const [first, second] = INTERNET.dns4;
  const net = L.lab.internet.net;
  await setUpstreamDns(L.lab, [second]);
  const before = { first: await net.queryCount(first, 'other.example.test'), second: await net.queryCount(second, 'other.example.test') };
  for (const server of ['10.139.1.1', '10.139.1.2']) {
    assert.deepEqual((await dnsQuery(L.ns('a'), server, 'other.example.test')).addresses, [INTERNET.other4], server);
  }
  assert.equal(await net.queryCount(first, 'other.example.test'), before.first, `nothing to ${first} any more`);
  assert.ok((await net.queryCount(second, 'other.example.test')) >= before.second + 2);
  // A dead upstream: names stop resolving (and nothing leaks elsewhere).
  await setUpstreamDns(L.lab, ['198.51.100.99']);
  assert.equal((await dnsQuery(L.ns('a'), '10.139.1.1', 'www.example.test', 'A', { timeoutMs: 1000 })).rcode, 'TIMEOUT');
  await setUpstreamDns(L.lab, [first, second]);
  await clientsOnline();
});
