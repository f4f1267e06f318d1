// Changing a qube's netvm at runtime (upstream integration tests 001/010): none → some,
// some → none, a switch between providers, and a switch while the old netvm is shut down.
// Each change is waited on through the agents' feedback (vif state, firewall applied, uplink
// status) inside the operation; the checks then look at the traffic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, dnsQuery, httpGet, ping } from '@qubes-net/netns';
import { setNetvm, startQube, stopQube } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: sys-firewall2, qid: 4, netvm: sys-net, provides_network: true }
  - { name: app, qid: 7 }
`), 'netvm');
});

after(async () => {
  await L?.destroy();
});

async function online(q: string): Promise<void> {
  assert.equal(await ping(L.ns(q), INTERNET.web4), true, `${q}: ping\n${await L.logs(q)}`);
  assert.deepEqual((await dnsQuery(L.ns(q), '10.139.1.1', 'www.example.test')).addresses, [INTERNET.web4]);
  assert.equal((await httpGet(L.ns(q), 'http://www.example.test/')).status, 200);
}

async function eth0(q: string): Promise<boolean> {
  return L.lab.runningQube(q).ns.ifaceExists('eth0');
}

test('none → some: the qube gets a vif, its QubesDB and traffic', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await eth0('app'), false);
  assert.equal(await L.lab.runningQube('app').db.read('/qubes-ip'), undefined);
  await setNetvm(L.lab, 'app', 'sys-firewall');
  const rq = L.lab.runningQube('app');
  assert.equal(await rq.db.read('/qubes-ip'), '10.137.0.7');
  assert.equal(await rq.db.read('/qubes-gateway'), '10.137.0.3');
  assert.equal(rq.vif?.name, `vif${rq.domid}.0`);
  assert.equal(await L.lab.runningQube('sys-firewall').db.read(`/qubes-vif/${rq.vif!.name}/state`), 'online');
  await online('app');
});

test('switch: to sys-net directly and back through the other proxy', async (t) => {
  if (!needRoot(t)) return;
  await setNetvm(L.lab, 'app', 'sys-net');
  assert.equal(await L.lab.runningQube('app').db.read('/qubes-gateway'), '10.137.0.2');
  assert.equal(L.lab.runningQube('app').vif?.provider, 'sys-net');
  // The old provider no longer has the client's rules or connected IP.
  const old = L.lab.runningQube('sys-firewall').db;
  assert.equal(await old.read('/qubes-firewall/10.137.0.7'), undefined);
  assert.equal(await old.read('/connected-ips'), '');
  await online('app');
  await setNetvm(L.lab, 'app', 'sys-firewall2');
  assert.equal(await L.lab.runningQube('app').db.read('/qubes-gateway'), '10.137.0.4');
  assert.equal(await L.lab.runningQube('sys-firewall2').db.read('/connected-ips'), '10.137.0.7');
  await online('app');
});

test('switch while the old netvm is shut down', async (t) => {
  if (!needRoot(t)) return;
  await stopQube(L.lab, 'sys-firewall2');
  assert.equal(await eth0('app'), false, 'the client lost its vif with its provider');
  assert.equal(await ping(L.ns('app'), INTERNET.web4, { timeoutMs: 800 }), false);
  await setNetvm(L.lab, 'app', 'sys-firewall');
  await online('app');
  await startQube(L.lab, 'sys-firewall2');
});

test('attaching to a halted netvm is refused, like dom0 does', async (t) => {
  if (!needRoot(t)) return;
  await stopQube(L.lab, 'sys-firewall2');
  await assert.rejects(setNetvm(L.lab, 'app', 'sys-firewall2'), /not running/);
  assert.equal(L.lab.spec('app').netvm, 'sys-firewall');
  await online('app');
});

test('some → none: the vif goes, the network keys go, nothing gets out', async (t) => {
  if (!needRoot(t)) return;
  await setNetvm(L.lab, 'app', null);
  assert.equal(await eth0('app'), false);
  const db = L.lab.runningQube('app').db;
  for (const k of ['/qubes-ip', '/qubes-gateway', '/qubes-ip6', '/qubes-primary-dns']) assert.equal(await db.read(k), undefined, k);
  assert.equal(await ping(L.ns('app'), INTERNET.web4, { timeoutMs: 800 }), false);
  assert.equal(await L.lab.runningQube('sys-firewall').db.read('/connected-ips'), '');
});
