// MTU through the whole chain (issue 14 part 2): a fake internet uplink at 1400 (a PPPoE or
// VPN uplink), sys-net → sys-firewall → clients at 1500. Without any dom0 setting, TCP works
// thanks to the MSS clamp and larger packets thanks to ICMP frag-needed / packet-too-big passing
// back through every hop and firewall; with `vm-config.net-mtu` the clients' eth0 and the vifs
// carry the MTU.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot } from '../helpers/root.js';
import { INTERNET, httpGet } from '@qubes-net/netns';
import { setFeature } from '@qubes-net/lab';
import { startLab, type E2ELab } from './fixture.js';

let L: E2ELab;

before(async () => {
  if (process.getuid?.() !== 0) return;
  L = await startLab(`
internet: { mtu: 1400 }
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
  - { name: c1, qid: 7, netvm: sys-firewall }
  - { name: c2, qid: 8, netvm: sys-firewall }
`, 'mtu');
});

after(async () => {
  await L?.destroy();
});

async function mtuOf(q: string, ifname: string): Promise<number> {
  const r = await L.lab.exec(q, ['ip', '-j', 'link', 'show', 'dev', ifname], { allowFailure: false });
  return (JSON.parse(r.stdout) as { mtu: number }[])[0]!.mtu;
}

const vifOf = (client: string) => L.lab.running.get(client)!.vif!;
const key = (q: string, k: string) => L.lab.runningQube(q).db.read(k);

/** The path MTU the client's kernel learned for `dst` (from an ICMP error), if any. */
async function learnedMtu(q: string, dst: string): Promise<number | undefined> {
  const r = await L.lab.exec(q, ['ip', dst.includes(':') ? '-6' : '-4', 'route', 'get', dst], { allowFailure: false });
  const m = / mtu (\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}

test('uplink at 1400, no feature: 100 kB downloads over IPv4 and IPv6 from a client behind sys-firewall', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await mtuOf('sys-net', 'eth0'), 1400);
  assert.equal(await mtuOf('c1', 'eth0'), 1500);
  for (const url of [`http://${INTERNET.web4}/bytes/100000`, `http://[${INTERNET.web6}]/bytes/100000`]) {
    const r = await httpGet(L.ns('c1'), url, { timeoutMs: 15_000 });
    assert.equal(r.status, 200, `${url}: ${r.error}\n${await L.logs()}`);
    assert.equal(r.body.length, 100_000, url);
  }
});

test('uplink at 1400, no feature: large packets get through after the ICMP error reaches the client (both families)', async (t) => {
  if (!needRoot(t)) return;
  // 1452 bytes of payload: 1500-byte packets, too big for the uplink. The first is answered by
  // sys-net with frag-needed / packet-too-big, which must pass back through sys-firewall (NAT,
  // firewall) to c2; c2 then sends smaller fragments and gets replies.
  const v6 = await L.lab.exec('c2', ['ping', '-6', '-n', '-c', '5', '-i', '0.3', '-W', '2', '-s', '1452', INTERNET.web6], { timeoutMs: 20_000 });
  assert.equal(await learnedMtu('c2', INTERNET.web6), 1400, v6.stdout);
  assert.match(v6.stdout, /[1-9]\d* received/, v6.stdout);
  const v4 = await L.lab.exec('c2', ['ping', '-4', '-n', '-M', 'want', '-c', '5', '-i', '0.3', '-W', '2', '-s', '1472', INTERNET.web4], { timeoutMs: 20_000 });
  assert.equal(await learnedMtu('c2', INTERNET.web4), 1400, v4.stdout);
  assert.match(v4.stdout, /[1-9]\d* received/, v4.stdout);
});

test('vm-config.net-mtu on sys-firewall: the key reaches the qubes below, their eth0 and the vifs carry the MTU', async (t) => {
  if (!needRoot(t)) return;
  await setFeature(L.lab, 'sys-firewall', 'vm-config.net-mtu', '1400').catch(async (err) => {
    throw new Error(`${(err as Error).message}\n${await L.logs()}`);
  });
  for (const q of ['sys-firewall', 'c1', 'c2']) {
    assert.equal(await key(q, '/vm-config/net-mtu'), '1400', q);
    assert.equal(await mtuOf(q, 'eth0'), 1400, `${q} eth0\n${await L.logs(q)}`);
  }
  assert.equal(await key('sys-net', '/vm-config/net-mtu'), undefined);
  for (const c of ['sys-firewall', 'c1', 'c2']) {
    const vif = vifOf(c);
    assert.equal(await mtuOf(vif.provider, vif.name), 1400, `${vif.provider} ${vif.name}\n${await L.logs(vif.provider)}`);
  }
  const r = await httpGet(L.ns('c1'), `http://[${INTERNET.web6}]/bytes/100000`, { timeoutMs: 15_000 });
  assert.equal(r.status, 200, r.error);
  assert.equal(r.body.length, 100_000);

  // Removed: the key goes, eth0 gets its own MTU back and the vifs Xen's default.
  await setFeature(L.lab, 'sys-firewall', 'vm-config.net-mtu', undefined).catch(async (err) => {
    throw new Error(`${(err as Error).message}\n${await L.logs()}`);
  });
  assert.equal(await key('c1', '/vm-config/net-mtu'), undefined);
  assert.equal(await mtuOf('c1', 'eth0'), 1500);
  const vif = vifOf('c1');
  assert.equal(await mtuOf(vif.provider, vif.name), 1500);
});
