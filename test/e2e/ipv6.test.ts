// The ipv6 feature and its inheritance down the netvm chain (upstream network_ipv6 tests): on
// sys-net only, disabled on one qube below an enabled netvm, on a client only (address but no
// gateway), changed at runtime with the change propagated down the tree.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, httpGet, ping } from '@qubes-net/netns';
import { setFeature } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: c1, qid: 7, netvm: sys-firewall }
  - { name: c2, qid: 8, netvm: sys-firewall }
`), 'ipv6');
});

after(async () => {
  await L?.destroy();
});

const key = (q: string, k: string) => L.lab.runningQube(q).db.read(k);
const v6 = (q: string) => ping(L.ns(q), INTERNET.web6, { timeoutMs: 1000 });

async function globalV6(q: string): Promise<string[]> {
  const r = await L.lab.exec(q, ['ip', '-6', '-j', 'addr', 'show', 'dev', 'eth0', 'scope', 'global'], { allowFailure: false });
  return (JSON.parse(r.stdout) as Array<{ addr_info: Array<{ local?: string }> }>).flatMap((i) => i.addr_info.map((a) => a.local)).filter((a): a is string => !!a);
}

test('ipv6 on sys-net only: the whole chain has IPv6 and reaches the IPv6 internet', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await key('sys-firewall', '/qubes-netvm-gateway6'), 'fd09:24ef:4179::a89:3');
  assert.equal(await key('c1', '/qubes-ip6'), 'fd09:24ef:4179::a89:7');
  assert.equal(await key('c1', '/qubes-gateway6'), 'fd09:24ef:4179::a89:3');
  assert.deepEqual(await globalV6('c1'), ['fd09:24ef:4179::a89:7']);
  assert.equal(await v6('c1'), true);
  assert.equal((await httpGet(L.ns('c2'), `http://[${INTERNET.web6}]/`)).status, 200);
});

test('disabled on one qube below an enabled netvm: only that qube loses IPv6', async (t) => {
  if (!needRoot(t)) return;
  await setFeature(L.lab, 'c2', 'ipv6', '');
  assert.equal(await key('c2', '/qubes-ip6'), undefined);
  assert.equal(await key('c2', '/qubes-gateway6'), undefined);
  assert.deepEqual(await globalV6('c2'), []);
  assert.equal(await v6('c2'), false);
  assert.equal(await v6('c1'), true);
  // The provider forgot c2's IPv6 rules and no longer lists it.
  assert.equal(await key('sys-firewall', '/qubes-firewall/fd09:24ef:4179::a89:8'), undefined);
  assert.equal(await key('sys-firewall', '/connected-ips6'), 'fd09:24ef:4179::a89:7');
});

test('ipv6 on a client only: an address but no gateway, so no IPv6 route out', async (t) => {
  if (!needRoot(t)) return;
  await setFeature(L.lab, 'sys-net', 'ipv6', undefined);
  assert.equal(await key('sys-firewall', '/qubes-ip6'), undefined);
  assert.equal(await key('c1', '/qubes-ip6'), undefined);
  await setFeature(L.lab, 'c1', 'ipv6', '1');
  assert.equal(await key('c1', '/qubes-ip6'), 'fd09:24ef:4179::a89:7');
  assert.equal(await key('c1', '/qubes-gateway6'), undefined);
  assert.equal(await key('sys-firewall', '/qubes-netvm-gateway6'), undefined);
  assert.equal(await v6('c1'), false);
  assert.equal(await ping(L.ns('c1'), INTERNET.web4), true, 'IPv4 unaffected');
});

test('enabling it again at the top propagates down to every qube that does not override it', async (t) => {
  if (!needRoot(t)) return;
  await setFeature(L.lab, 'c1', 'ipv6', undefined);
  await setFeature(L.lab, 'sys-net', 'ipv6', '1');
  assert.equal(await key('c1', '/qubes-gateway6'), 'fd09:24ef:4179::a89:3');
  assert.equal(await v6('c1'), true);
  assert.equal(await key('c2', '/qubes-ip6'), undefined, 'c2 still overrides with ""');
  assert.equal(await v6('c2'), false);
});
