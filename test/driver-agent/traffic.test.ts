// The core path end to end: base ruleset → vifs online through the C hotplug client and
// the daemon → traffic through the netvm; anti-spoofing, client isolation, IPv6 on/off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dnsQuery, httpGet, ping, INTERNET } from '@qubes-net/netns';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { DriverLab, type Client, GATEWAY, GATEWAY6 } from './lab.js';

let lab: DriverLab;
let c1: Client;
let c2: Client;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-traffic');
  [c1, c2] = await Promise.all([lab.addClient('client1', 11), lab.addClient('client2', 12)]);
  await lab.startDaemonReady();
  await Promise.all([lab.online(c1), lab.online(c2)]);
});

after(async () => {
  await lab?.destroy();
});

test('hotplug online reports success in xenstore and QubesDB', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await lab.netvm.xenstoreRead(`${lab.xenbusPath(11)}/hotplug-status`), 'connected');
  const e = await lab.waitEntry('vif11.0', 'online');
  assert.equal(e.ip, `${c1.ip} ${c1.ip6}`);
  assert.equal(e.mac, '00:16:3e:5e:6c:00');
  assert.equal(e.domid, '11');
  assert.match(e.generation!, /^\d+$/);
  const k = await lab.vifKernel('vif11.0');
  assert.deepEqual(k.routes, [`${c1.ip} metric ${32752 - 11}`, `${c1.ip6} metric ${32752 - 11}`]);
  assert.deepEqual(k.addrs, [`${GATEWAY}/32`, `${GATEWAY6}/128`]);
  assert.deepEqual(k.neigh, [`${c1.ip} 00:16:3e:5e:6c:00`, `${c1.ip6} 00:16:3e:5e:6c:00`]);
  assert.equal(k.group, '2');
});

test('ping, HTTP and DNS through 10.139.1.1 and .2 work from both clients', async (t) => {
  if (!needRoot(t)) return;
  for (const c of [c1, c2]) {
    assert.ok(await ping(c.qube, GATEWAY), `${c.name} pings its gateway`);
    assert.ok(await ping(c.qube, INTERNET.web4), `${c.name} pings the internet`);
    const http = await httpGet(c.qube, `http://${INTERNET.web4}/`);
    assert.equal(http.status, 200, `${c.name} HTTP: ${http.error}`);
    for (const dns of ['10.139.1.1', '10.139.1.2']) {
      const r = await dnsQuery(c.qube, dns, 'example.test');
      assert.equal(r.rcode, 'NOERROR', `${c.name} via ${dns}`);
      assert.deepEqual(r.addresses, [INTERNET.web4]);
    }
  }
  // The traffic left masqueraded (the internet only knows the uplink subnet).
  assert.ok(lab.internet.connections().some((x) => x.remote.startsWith('192.0.2.2')));
});

test('client-to-client traffic is blocked', async (t) => {
  if (!needRoot(t)) return;
  assert.equal(await ping(c1.qube, c2.ip), false);
  assert.equal(await ping(c2.qube, c1.ip), false);
  const r = await httpGet(c1.qube, `http://${c2.ip}/`, { timeoutMs: 1000 });
  assert.equal(r.status, 0);
});

test('a client that changes its own address reaches nothing, and the drop counter moves', async (t) => {
  if (!needRoot(t)) return;
  const before = await lab.counter('ip', 'antispoof');
  await c2.qube.exec('ip', ['addr', 'add', '10.137.0.99/32', 'dev', 'eth0']);
  try {
    // Send from the new address: the default route's preferred source.
    await c2.qube.exec('ip', ['route', 'change', 'default', 'via', GATEWAY, 'dev', 'eth0', 'onlink', 'src', '10.137.0.99']);
    assert.equal(await ping(c2.qube, INTERNET.web4, { count: 2 }), false, 'spoofed source reaches nothing');
    await waitFor('antispoof drop counter', async () => (await lab.counter('ip', 'antispoof')) > before);
  } finally {
    await c2.qube.exec('ip', ['route', 'change', 'default', 'via', GATEWAY, 'dev', 'eth0', 'onlink', 'src', c2.ip]);
    await c2.qube.exec('ip', ['addr', 'del', '10.137.0.99/32', 'dev', 'eth0']);
  }
  assert.ok(await ping(c2.qube, INTERNET.web4), 'its own address works again');
});

test('IPv6 is forwarded when /qubes-netvm-gateway6 is set, and not when it is removed', async (t) => {
  if (!needRoot(t)) return;
  assert.ok(await ping(c1.qube, GATEWAY6), 'gateway6 answers (proxy NDP, permanent neighbours)');
  assert.ok(await ping(c1.qube, INTERNET.web6), 'IPv6 to the internet, masqueraded');
  const http6 = await httpGet(c1.qube, `http://[${INTERNET.web6}]/`);
  assert.equal(http6.status, 200);

  await lab.writeKeys({ '/qubes-netvm-gateway6': undefined });
  await waitFor('ipv6 forwarding off', async () => (await lab.netvm.exec('cat', ['/proc/sys/net/ipv6/conf/all/forwarding'])).stdout.trim() === '0');
  await waitFor('gateway6 removed from the vifs', async () => !(await lab.vifKernel('vif11.0')).addrs.includes(`${GATEWAY6}/128`));
  assert.equal(await ping(c1.qube, INTERNET.web6), false, 'no IPv6 forwarding');
  assert.ok(await ping(c1.qube, INTERNET.web4), 'IPv4 unaffected');

  await lab.writeKeys({ '/qubes-netvm-gateway6': GATEWAY6 });
  await waitFor('ipv6 forwarding on again', async () => (await lab.netvm.exec('cat', ['/proc/sys/net/ipv6/conf/all/forwarding'])).stdout.trim() === '1');
  await waitFor('IPv6 works again', () => ping(c1.qube, INTERNET.web6));
});

test('an IPv6 source the vif was not given is dropped', async (t) => {
  if (!needRoot(t)) return;
  await c2.qube.exec('ip', ['addr', 'add', 'fd09:24ef:4179::a89:99/128', 'dev', 'eth0', 'nodad']);
  const before = await lab.counter('ip6', 'antispoof');
  try {
    await c2.qube.exec('ip', ['-6', 'route', 'change', 'default', 'via', GATEWAY6, 'dev', 'eth0', 'onlink', 'src', 'fd09:24ef:4179::a89:99']);
    assert.equal(await ping(c2.qube, INTERNET.web6, { count: 2 }), false);
    await waitFor('ip6 antispoof drop counter', async () => (await lab.counter('ip6', 'antispoof')) > before);
  } finally {
    await c2.qube.exec('ip', ['-6', 'route', 'change', 'default', 'via', GATEWAY6, 'dev', 'eth0', 'onlink', 'src', c2.ip6], { allowFailure: true });
    await c2.qube.exec('ip', ['addr', 'del', 'fd09:24ef:4179::a89:99/128', 'dev', 'eth0']);
  }
  assert.ok(await ping(c2.qube, INTERNET.web6), 'its own IPv6 address works');
});

test('/connected-ips: never accepted from the uplink, nothing for them leaves through it', async (t) => {
  if (!needRoot(t)) return;
  const halted = '10.137.0.200'; // a downstream qube that is not running
  await lab.writeKeys({ '/connected-ips': `${c1.ip} ${c2.ip} ${halted}` });
  await waitFor('connected set', async () => (await lab.setElements('ip', 'connected')).includes(halted));
  // From the internet, spoofing the halted qube's address.
  const inet = lab.internet.qube;
  await inet.exec('ip', ['addr', 'add', `${halted}/32`, 'dev', 'lo']);
  await inet.exec('ip', ['route', 'replace', '192.0.2.2/32', 'dev', 'uplink0', 'src', halted]);
  const dropsIn = await lab.counter('ip', 'prerouting');
  try {
    assert.equal(await ping(inet, '192.0.2.2', { count: 2, timeoutMs: 500 }), false);
  } finally {
    await inet.exec('ip', ['route', 'del', '192.0.2.2/32', 'dev', 'uplink0']);
    await inet.exec('ip', ['addr', 'del', `${halted}/32`, 'dev', 'lo']);
  }
  await waitFor('prerouting drop counter', async () => (await lab.counter('ip', 'prerouting')) > dropsIn);
  // From the netvm towards the halted qube: no vif route, so the default route would take it out.
  const dropsOut = await lab.counter('ip', 'egress-guard');
  assert.equal(await ping(lab.netvm, halted, { count: 1, timeoutMs: 500 }), false);
  await waitFor('egress guard counter', async () => (await lab.counter('ip', 'egress-guard')) > dropsOut);
  assert.ok(await ping(c1.qube, INTERNET.web4), 'running clients unaffected');
});

test('the uplink going down and up is followed without a restart', async (t) => {
  if (!needRoot(t)) return;
  const pid = lab.daemon!.child.pid;
  await lab.netvm.exec('ip', ['link', 'set', 'eth0', 'down']);
  assert.equal(await ping(c1.qube, INTERNET.web4, { timeoutMs: 500 }), false);
  await lab.netvm.exec('ip', ['link', 'set', 'eth0', 'up']);
  await lab.netvm.exec('ip', ['route', 'replace', 'default', 'via', INTERNET.gateway4, 'dev', 'eth0']);
  await waitFor('traffic again', () => ping(c1.qube, INTERNET.web4));
  assert.equal((await dnsQuery(c1.qube, '10.139.1.1', 'example.test')).rcode, 'NOERROR');
  await waitFor('uplink change seen', () => lab.logs('uplink changed').some((l) => l.ifname === 'eth0'));
  assert.equal(lab.daemon!.child.pid, pid, 'same daemon');
});

test('status: every vif, the DNS mapping, and the kernel in sync', async (t) => {
  if (!needRoot(t)) return;
  const s = await lab.status();
  assert.equal(s.ok, true);
  assert.deepEqual(s.vifs.map((v: any) => [v.vif, v.state]), [['vif11.0', 'online'], ['vif12.0', 'online']]);
  assert.deepEqual(s.vifs[0].ips, [c1.ip, c1.ip6]);
  assert.equal(s.dns.mode, 'dnat');
  assert.deepEqual(s.dns.upstream, ['198.51.100.53', '198.51.100.54']);
  assert.equal(s.flowtables, false, 'this kernel has no flowtables: fallback path');
  assert.deepEqual(s.kernel.differences, []);
  assert.equal(s.kernel.inSync, true);
  assert.equal(await lab.table('inet', 'qubes-nat-accel'), undefined, 'no flowtable table without kernel support');
  const text = await lab.cli(['status', '--resolv-conf', '/run/qn-drv/resolv.conf']);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /vif11\.0\s+11\s+online/);
  assert.match(text.stdout, /10\.139\.1\.1 → 198\.51\.100\.53/);
  assert.match(text.stdout, /kernel: matches the desired state/);
});

test('the happy path logged no error', async (t) => {
  if (!needRoot(t)) return;
  assert.deepEqual(lab.logs().filter((l) => l.level >= 50).map((l) => l.msg), []);
  assert.ok(lab.logs('vif online').some((l) => l.vif === 'vif11.0' && Array.isArray(l.ip)));
});
