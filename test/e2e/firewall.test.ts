// Upstream's firewall scenarios (integration tests 030/031) in the lab: rules set through dom0's
// QubesDB sequence, each change waited on through /qubes-firewall-applied/<ip>, then the
// behaviour checked from inside the client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, dnsQuery, httpGet, ping, tcpHold } from '@qubes-net/netns';
import { parseRuleList, setFirewall } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: fw, qid: 7, netvm: sys-firewall }
`), 'firewall');
});

after(async () => {
  await L?.destroy();
});

async function rules(...r: string[]): Promise<void> {
  const applied = await setFirewall(L.lab, 'fw', parseRuleList(r));
  for (const [ip, fb] of applied) assert.equal(fb.state, 'ok', `${ip}: ${fb.state} ${fb.detail}`);
}

const web = `http://${INTERNET.web4}/`;
const dns = () => dnsQuery(L.ns('fw'), '10.139.1.1', 'www.example.test', 'A', { timeoutMs: 1500 });

test('drop all: no ping, no TCP, no DNS', async (t) => {
  if (!needRoot(t)) return;
  await rules('action=drop');
  assert.equal(await ping(L.ns('fw'), INTERNET.web4, { timeoutMs: 800 }), false);
  assert.notEqual((await httpGet(L.ns('fw'), web, { timeoutMs: 1500 })).status, 200);
  assert.equal((await dns()).addresses.length, 0);
});

test('icmp allowed: ping works, names do not resolve', async (t) => {
  if (!needRoot(t)) return;
  await rules('action=accept proto=icmp', 'action=drop');
  assert.equal(await ping(L.ns('fw'), INTERNET.web4), true);
  assert.equal((await dns()).addresses.length, 0);
  assert.notEqual((await httpGet(L.ns('fw'), web, { timeoutMs: 1500 })).status, 200);
});

test('icmp and dns allowed: names resolve, TCP still blocked', async (t) => {
  if (!needRoot(t)) return;
  await rules('action=accept proto=icmp', 'action=accept specialtarget=dns', 'action=drop');
  assert.deepEqual((await dns()).addresses, [INTERNET.web4]);
  assert.equal(await ping(L.ns('fw'), INTERNET.web4), true);
  assert.notEqual((await httpGet(L.ns('fw'), 'http://www.example.test/', { timeoutMs: 1500 })).status, 200);
});

test('dsthost + tcp + port: only that host and port', async (t) => {
  if (!needRoot(t)) return;
  await rules('action=accept specialtarget=dns', 'action=accept dsthost=www.example.test proto=tcp dstports=80');
  assert.equal((await httpGet(L.ns('fw'), 'http://www.example.test/')).status, 200);
  assert.notEqual((await httpGet(L.ns('fw'), 'http://other.example.test/', { timeoutMs: 1500 })).status, 200, 'another host');
  assert.equal(await ping(L.ns('fw'), INTERNET.web4, { timeoutMs: 800 }), false, 'icmp is not allowed');
  await assert.rejects(tcpHold(L.ns('fw'), INTERNET.web4, INTERNET.echoPorts[0]), 'another port');
});

test('a drop rule for the target before an accept wins', async (t) => {
  if (!needRoot(t)) return;
  await rules(`action=drop dsthost=${INTERNET.web4} proto=tcp`, 'action=accept');
  assert.notEqual((await httpGet(L.ns('fw'), web, { timeoutMs: 1500 })).status, 200);
  assert.equal((await httpGet(L.ns('fw'), `http://${INTERNET.other4}/`)).status, 200);
  assert.equal(await ping(L.ns('fw'), INTERNET.web4), true);
});

test('an established flow the new rules block is cut; one they allow continues (031)', async (t) => {
  if (!needRoot(t)) return;
  await rules('action=accept');
  const [blocked, kept] = INTERNET.echoPorts;
  const cut = await tcpHold(L.ns('fw'), INTERNET.web4, blocked);
  const stays = await tcpHold(L.ns('fw'), INTERNET.web4, kept);
  try {
    await cut.waitForMoreEchoes(2);
    await stays.waitForMoreEchoes(2);
    await rules(`action=drop proto=tcp dstports=${blocked}`, 'action=accept');
    const end = await cut.ended;
    assert.equal(end.event, 'broken', JSON.stringify(end));
    await stays.waitForMoreEchoes(3);
  } finally {
    await cut.stop();
    await stays.stop();
  }
});

test('reset to the default accepts everything again', async (t) => {
  if (!needRoot(t)) return;
  await rules();
  assert.equal((await httpGet(L.ns('fw'), 'http://www.example.test/')).status, 200);
  assert.equal(await ping(L.ns('fw'), INTERNET.web6), true);
});
