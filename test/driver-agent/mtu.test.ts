// MTU through a network qube (issue 14 part 2): the MSS clamp in the base ruleset, each vif's
// MTU from its xenstore backend `mtu` entry, and ICMP errors passing back as `related`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseRulesetScript, checkVifMtu, computeDnsMapping, parseXenstoreLs, readVifBackendEntry, removalIpLines, transitionIpLines, validateVifEvent, vifKernelState, type VifSpec } from '@qubes-net/driver-agent';
import { forwardRuleExprs } from '@qubes-net/firewall';
import { httpGet, INTERNET } from '@qubes-net/netns';
import { needRoot, isRoot } from '../helpers/root.js';
import { DriverLab, type Client } from './lab.js';

const CLAMP = 'tcp flags syn tcp option maxseg size set rt mtu';

test('base ruleset: the MSS clamp is the first forward rule of both families', () => {
  const dns = computeDnsMapping({ virtualDns: ['10.139.1.1', '10.139.1.2'], servers4: ['198.51.100.53'], ownAddresses: new Set(), behindQubesProvider: false }).mapping;
  const lines = baseRulesetScript({ ipv6: true, connected4: [], connected6: [], dns }).split('\n');
  for (const f of ['ip', 'ip6']) {
    const forward = lines.filter((l) => l.startsWith(`add rule ${f} qubes forward `));
    assert.equal(forward[0], `add rule ${f} qubes forward ${CLAMP}`, f);
    // ICMP errors about a known flow (frag-needed, packet-too-big) are accepted as related.
    assert.ok(forward.includes(`add rule ${f} qubes forward ct state established,related accept`));
  }
  assert.ok(forwardRuleExprs(4).includes('ct state established,related accept'));
  assert.ok(forwardRuleExprs(6).includes('ct state established,related accept'));
});

test('checkVifMtu: strict decimal, 576 (1280 with IPv6) to 65535; empty = none', () => {
  const v4 = { ipv6: [] as string[] }, v6 = { ipv6: ['fd09::7'] };
  assert.deepEqual(checkVifMtu(undefined, v4), {});
  assert.deepEqual(checkVifMtu('', v4), {});
  assert.deepEqual(checkVifMtu('1400', v6), { mtu: 1400 });
  assert.deepEqual(checkVifMtu('576', v4), { mtu: 576 });
  assert.match(checkVifMtu('1000', v6) as string, /below 1280/);
  assert.match(checkVifMtu('575', v4) as string, /below 576/);
  assert.match(checkVifMtu('65536', v4) as string, /above/);
  for (const bad of ['01400', '1400\n', ' 1400', '1e3', '-1', '0x578', 'abc']) assert.match(checkVifMtu(bad, v4) as string, /decimal/, bad);
});

test('validateVifEvent carries the backend mtu; a bad one refuses the vif with its xenstore key', () => {
  const base = { op: 'online', vif: 'vif12.0', ips: '10.137.0.12', mac: '00:16:3e:5e:6c:00', xenbusPath: '/local/domain/1/backend/vif/12/0' };
  const ok = validateVifEvent({ ...base, mtu: '1400' });
  assert.ok(ok.ok && ok.spec.mtu === 1400);
  const none = validateVifEvent(base);
  assert.ok(none.ok && none.spec.mtu === undefined);
  const bad = validateVifEvent({ ...base, mtu: '14OO' });
  assert.ok(!bad.ok);
  assert.equal(!bad.ok && bad.error.key, '/local/domain/1/backend/vif/12/0/mtu');
});

test('the vif link line carries the MTU only when the backend gives one', () => {
  const spec: VifSpec = { vif: 'vif12.0', domid: 12, devid: 0, ipv4: ['10.137.0.12'], ipv6: [], mac: '00:16:3e:5e:6c:00', type: 'vif' };
  const provider = { gateway: '10.137.0.2' } as Parameters<typeof vifKernelState>[1];
  const facts = { exists: true, ipv6: false };
  assert.equal(transitionIpLines(undefined, vifKernelState(spec, provider, facts)).apply[0], 'link set dev vif12.0 group 2 up');
  assert.equal(transitionIpLines(undefined, vifKernelState({ ...spec, mtu: 1400 }, provider, facts)).apply[0], 'link set dev vif12.0 mtu 1400 group 2 up');
  const with1400 = vifKernelState({ ...spec, mtu: 1400 }, provider, facts);
  assert.equal(transitionIpLines(with1400, vifKernelState(spec, provider, facts)).apply[0], 'link set dev vif12.0 mtu 1500 group 2 up', 'entry removed: back to the default');
  assert.ok(removalIpLines(with1400).includes('link set dev vif12.0 down group default mtu 1500'));
  assert.ok(removalIpLines(vifKernelState(spec, provider, facts)).includes('link set dev vif12.0 down group default'));
});

test('xenstore: the backend mtu is read by the start-up scan and by path (stand-in and xenstore-ls)', async () => {
  const ls = '/local/domain/1/backend/vif/12/0/ip = "10.137.0.12"\n/local/domain/1/backend/vif/12/0/mtu = "1400"\n/local/domain/1/backend/vif/13/0/ip = "10.137.0.13"\n';
  const vifs = parseXenstoreLs(ls, '/local/domain/1/backend/vif');
  assert.equal(vifs.find((v) => v.vif === 'vif12.0')?.mtu, '1400');
  assert.equal(vifs.find((v) => v.vif === 'vif13.0')?.mtu, undefined);
  const dir = mkdtempSync(join(tmpdir(), 'qn-mtu-xs-'));
  try {
    mkdirSync(join(dir, 'local/domain/1/backend/vif/12/0'), { recursive: true });
    writeFileSync(join(dir, 'local/domain/1/backend/vif/12/0/mtu'), '1400');
    assert.equal(await readVifBackendEntry(dir, '/local/domain/1/backend/vif/12/0', 'mtu'), '1400');
    assert.equal(await readVifBackendEntry(dir, '/local/domain/1/backend/vif/13/0', 'mtu'), undefined);
    // The event's path is untrusted: only a vif backend path is read.
    assert.equal(await readVifBackendEntry(dir, '/local/domain/1/backend/vif/12/0/../../12/0', 'mtu'), undefined);
    assert.equal(await readVifBackendEntry(dir, '/etc', 'mtu'), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- real kernel

let lab: DriverLab;
let c1: Client;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-mtu');
  c1 = await lab.addClient('client1', 41);
  await lab.netvm.xenstoreWrite(`${lab.xenbusPath(41)}/mtu`, '1400');
  await lab.startDaemonReady();
  await lab.online(c1);
});
after(async () => {
  await lab?.destroy();
});

async function mtuOf(q: { exec: DriverLab['netvm']['exec'] }, ifname: string): Promise<number> {
  const r = await q.exec('ip', ['-j', 'link', 'show', 'dev', ifname]);
  return (JSON.parse(r.stdout) as { mtu: number }[])[0]!.mtu;
}

test('real kernel: the vif takes its backend mtu on online; a bad value refuses the vif', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await mtuOf(lab.netvm, c1.vif), 1400);
  const c2 = await lab.addClient('client2', 42);
  await lab.netvm.xenstoreWrite(`${lab.xenbusPath(42)}/mtu`, '1400; reboot');
  const r = await lab.hotplug('online', c2.vif, 42);
  assert.notEqual(r.code, 0, r.stdout);
  assert.equal(await mtuOf(lab.netvm, c2.vif), 1500);
  assert.ok(lab.logs('vif rejected').some((l) => l.key === `${lab.xenbusPath(42)}/mtu`), JSON.stringify(lab.logs('vif rejected')));
});

test('real kernel: TCP SYNs toward a smaller-MTU uplink leave with a clamped MSS, and a download works', async (t) => {
  if (!needRoot(t)) return;
  // The uplink at 1400 on the netvm's side only: without the clamp, the server (whose own
  // link is 1500) would send 1460-byte segments that the uplink drops (a PMTU black hole).
  await lab.netvm.exec('ip', ['link', 'set', 'dev', 'eth0', 'mtu', '1400']);
  const inet = lab.internet.qube;
  await inet.exec('nft', ['-f', '-'], { input: 'table inet qn_mtu_probe {\n chain in { type filter hook input priority 0; policy accept;\n  tcp flags syn tcp option maxseg size 1360 counter\n  tcp flags syn tcp option maxseg size 1340 counter\n }\n}\n' });
  try {
    const r4 = await httpGet(c1.qube, `http://${INTERNET.web4}/bytes/100000`, { timeoutMs: 10_000 });
    assert.equal(r4.status, 200, r4.error);
    assert.equal(r4.body.length, 100_000);
    const r6 = await httpGet(c1.qube, `http://[${INTERNET.web6}]/bytes/100000`, { timeoutMs: 10_000 });
    assert.equal(r6.status, 200, r6.error);
    assert.equal(r6.body.length, 100_000);
    const list = (await inet.exec('nft', ['list', 'table', 'inet', 'qn_mtu_probe'])).stdout;
    const counts = [...list.matchAll(/maxseg size (\d+) counter packets (\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
    assert.ok(counts.some(([size, n]) => size === 1360 && n! > 0), list);
    assert.ok(counts.some(([size, n]) => size === 1340 && n! > 0), list);
  } finally {
    await inet.exec('nft', ['delete', 'table', 'inet', 'qn_mtu_probe'], { allowFailure: true });
    await lab.netvm.exec('ip', ['link', 'set', 'dev', 'eth0', 'mtu', '1500']);
  }
});
