// Connectivity by IP and by name through a ProxyVM chain, from every client; inter-qube
// isolation through the same and through different proxies; spoofing; the disposable's
// addresses; IPv4-only qube below an IPv6 netvm. One shared lab: none of these change it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, dnsQuery, httpGet, ping } from '@qubes-net/netns';
import { checkIsolation, checkSpoofing, clientChecks, realIPv4 } from '@qubes-net/lab';
import { startLab, chainTopology, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(chainTopology(`
  - { name: sys-firewall2, qid: 4, netvm: sys-net, provides_network: true }
  - { name: work, qid: 7, netvm: sys-firewall }
  - { name: personal, qid: 8, netvm: sys-firewall }
  - { name: untrusted, qid: 9, netvm: sys-firewall, features: { ipv6: "" } }
  - { name: mail, qid: 10, netvm: sys-firewall2 }
  - { name: disp7, qid: 11, class: DispVM, dispid: 300, netvm: sys-firewall }
`), 'connect');
});

after(async () => {
  await L?.destroy();
});

test('every client reaches the internet by IP and by name through its chain', async (t) => {
  if (!needRoot(t)) return;
  const qubes = ['sys-firewall', 'sys-firewall2', 'work', 'personal', 'untrusted', 'mail', 'disp7'];
  const results = (await Promise.all(qubes.map((q) => clientChecks(L.lab, q)))).flat();
  const failed = results.filter((r) => !r.ok).map((r) => `${r.qube}: ${r.check}: expected ${r.expect}, got ${r.got} (${r.detail})`);
  assert.deepEqual(failed, [], await L.logs());
  assert.ok(results.length >= qubes.length * 5);
});

test('the chain masquerades: the internet sees sys-net\'s uplink address', async (t) => {
  if (!needRoot(t)) return;
  const r = await httpGet(L.ns('work'), `http://${INTERNET.web4}/whoami`);
  assert.equal(r.status, 200);
  assert.match(r.body, /192\.0\.2\.2/);
});

test('DNS from a client goes through both virtual addresses', async (t) => {
  if (!needRoot(t)) return;
  for (const server of ['10.139.1.1', '10.139.1.2']) {
    const r = await dnsQuery(L.ns('mail'), server, 'alias.example.test');
    assert.equal(r.rcode, 'NOERROR', server);
    assert.ok(r.addresses.includes(INTERNET.web4), `${server}: ${JSON.stringify(r)}`);
  }
  const nx = await dnsQuery(L.ns('mail'), '10.139.1.1', 'nonexistent.example.test');
  assert.equal(nx.rcode, 'NXDOMAIN');
});

test('no inter-qube traffic, neither through the same proxy nor through different ones', async (t) => {
  if (!needRoot(t)) return;
  for (const [from, to] of [['work', 'personal'], ['personal', 'work'], ['work', 'mail'], ['mail', 'work'], ['disp7', 'untrusted']] as const) {
    const r = await checkIsolation(L.lab, from, to);
    assert.ok(r.ok, `${from} → ${to}: ${r.detail}`);
  }
  // A client cannot reach another provider's gateway address either (it is only on vifs).
  assert.equal(await ping(L.ns('work'), realIPv4(L.lab.model, 'sys-firewall2')!, { timeoutMs: 800 }), false);
});

test('a spoofed source address does not leave the netvm (upstream test 050)', async (t) => {
  if (!needRoot(t)) return;
  for (const q of ['work', 'mail']) {
    const r = await checkSpoofing(L.lab, q);
    assert.ok(r.ok, `${q}: ${r.detail}`);
  }
});

test('addresses: disposable from its dispid, IPv6 inherited from sys-net, none for the IPv4-only qube', async (t) => {
  if (!needRoot(t)) return;
  const addrs = async (q: string) => {
    const r = await L.lab.exec(q, ['ip', '-j', 'addr', 'show', 'dev', 'eth0'], { allowFailure: false });
    return (JSON.parse(r.stdout) as Array<{ addr_info: Array<{ local: string; scope: string }> }>)[0]!.addr_info.filter((a) => a.scope === 'global').map((a) => a.local).sort();
  };
  assert.deepEqual(await addrs('disp7'), ['10.138.1.46', 'fd09:24ef:4179::a8a:12c']);
  assert.deepEqual(await addrs('work'), ['10.137.0.7', 'fd09:24ef:4179::a89:7']);
  assert.deepEqual(await addrs('untrusted'), ['10.137.0.9']);
  assert.equal(await ping(L.ns('untrusted'), INTERNET.web6, { timeoutMs: 800 }), false);
  assert.equal(await L.lab.runningQube('untrusted').db.read('/qubes-ip6'), undefined);
});
