// Fake IP (upstream's integration tests 200-204) in the lab: a client with `net.fake-ip` and
// `net.fake-gateway` sees only those, reaches the internet by IP and by name, its firewall is
// still keyed on (and enforced for) its real address, and a normal client beside it is not
// affected. The provider translates on the vif itself (table netdev qubes-fakeip).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, httpGet, ping } from '@qubes-net/netns';
import { parseRuleList, realIPv4, setFirewall } from '@qubes-net/lab';
import { startLab, type E2ELab } from './fixture.js';

const FAKE = '192.168.1.128';
const FAKEGW = '192.168.1.1';
let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(`
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: hidden, qid: 7, netvm: sys-firewall, features: { net.fake-ip: "${FAKE}", net.fake-gateway: "${FAKEGW}" } }
  - { name: work, qid: 8, netvm: sys-firewall }
`, 'fakeip');
});

after(async () => {
  await L?.destroy();
});

async function ipJson(qube: string, args: string[]): Promise<any[]> {
  return JSON.parse((await L.ns(qube).exec('ip', ['-j', ...args])).stdout) as any[];
}

async function eth0(qube: string): Promise<{ addrs: string[]; routes: any[] }> {
  const links = await ipJson(qube, ['addr', 'show', 'dev', 'eth0']);
  const addrs = (links[0]?.addr_info ?? []).filter((a: any) => a.scope !== 'link').map((a: any) => `${a.local}/${a.prefixlen}`);
  const routes = await ipJson(qube, ['-4', 'route', 'show', 'table', 'main']);
  return { addrs, routes };
}

const real = (q: string) => realIPv4(L.lab.model, q)!;

test('the client sees only its fake IP and fake gateway', async (t) => {
  if (!needRoot(t)) return;
  const { addrs, routes } = await eth0('hidden');
  assert.deepEqual(addrs, [`${FAKE}/32`]);
  const def = routes.find((r) => r.dst === 'default');
  assert.equal(def?.gateway, FAKEGW, JSON.stringify(routes));
  const text = JSON.stringify({ addrs, routes });
  assert.doesNotMatch(text, /10\.137\./, 'no real address of the client or of its netvm');
  assert.equal(real('hidden'), '10.137.0.7');
});

test('ping and HTTP by name reach the fake internet; the gateway answers at its fake address', async (t) => {
  if (!needRoot(t)) return;
  const q = L.ns('hidden');
  assert.ok(await ping(q, INTERNET.web4), await L.logs('sys-firewall'));
  assert.ok(await ping(q, FAKEGW), 'the fake gateway answers');
  const http = await httpGet(q, 'http://www.example.test/');
  assert.equal(http.status, 200, http.error);
});

test('the provider translates on the vif; anti-spoofing and the vif record use the real IP', async (t) => {
  if (!needRoot(t)) return;
  const vif = L.lab.runningQube('hidden').vif!.name;
  const fw = L.ns('sys-firewall');
  const table = (await fw.exec('nft', ['list', 'table', 'netdev', 'qubes-fakeip'])).stdout;
  assert.match(table, new RegExp(`chain in-${vif.replace('.', '\\.')} `));
  assert.match(table, new RegExp(`ip saddr ${FAKE.replace(/\./g, '\\.')} ip saddr set 10\\.137\\.0\\.7`));
  assert.doesNotMatch(table, new RegExp(L.lab.runningQube('work').vif!.name.replace('.', '\\.')), 'no chain for a normal client');
  const allowed = (await fw.exec('nft', ['list', 'set', 'ip', 'qubes', 'allowed'])).stdout;
  assert.match(allowed, new RegExp(`"${vif.replace('.', '\\.')}" \\. 10\\.137\\.0\\.7`));
  assert.equal(await L.lab.runningQube('sys-firewall').db.read(`/qubes-vif/${vif}/ip`), '10.137.0.7');
  assert.equal(await L.lab.runningQube('sys-firewall').db.read(`/qubes-vif/${vif}/state`), 'online');
});

test('the firewall rules still apply, keyed on the real IP', async (t) => {
  if (!needRoot(t)) return;
  const q = L.ns('hidden');
  try {
    const applied = await setFirewall(L.lab, 'hidden', parseRuleList(['action=accept proto=icmp', 'action=drop']));
    assert.deepEqual([...applied.keys()], ['10.137.0.7']);
    for (const [ip, fb] of applied) assert.equal(fb.state, 'ok', `${ip}: ${fb.state} ${fb.detail}`);
    assert.ok(await ping(q, INTERNET.web4));
    assert.notEqual((await httpGet(q, `http://${INTERNET.web4}/`, { timeoutMs: 1500 })).status, 200);
  } finally {
    const back = await setFirewall(L.lab, 'hidden', parseRuleList([]));
    for (const [ip, fb] of back) assert.equal(fb.state, 'ok', `${ip}: ${fb.state} ${fb.detail}`);
  }
  assert.equal((await httpGet(q, `http://${INTERNET.web4}/`)).status, 200);
});

test('another client beside it is unaffected', async (t) => {
  if (!needRoot(t)) return;
  const { addrs, routes } = await eth0('work');
  assert.deepEqual(addrs, [`${real('work')}/32`]);
  assert.equal(routes.find((r) => r.dst === 'default')?.gateway, '10.137.0.3');
  const q = L.ns('work');
  assert.ok(await ping(q, INTERNET.web4));
  assert.ok(await ping(q, '10.137.0.3'));
  assert.equal((await httpGet(q, 'http://www.example.test/')).status, 200);
  // Still no client-to-client traffic, whatever address the other one believes it has.
  assert.equal(await ping(q, FAKE, { timeoutMs: 800 }), false);
  assert.equal(await ping(q, '10.137.0.7', { timeoutMs: 800 }), false);
});
