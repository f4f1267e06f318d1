// The NetworkManager connection "VM uplink <IF>" rendered from the validated uplink config
// (reference §3.4), its store on disk (atomic, 0600, rewritten only on a change), and the
// kernel lines of the NetworkManager path. Pure or temp-dir only: no root needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseUplinkConfig, desiredUplink, parseKernelState, renderUplinkKeyfile, connectionUuid, writeKeyfile, keyfilePath, uuidOf,
  nmKernelLines, chooseNetworkManager, type ConfigOutcome, type UplinkConfig,
} from '@qubes-net/guest-agent';
import { MemoryQubesDB } from '@qubes-net/qubesdb';
import { APPENDIX_A, FRESH, OURS } from './fixtures.js';

const MAC = '00:16:3e:5e:6c:00';

function config(over: Record<string, string | undefined> = {}): UplinkConfig {
  const keys = new Map(Object.entries({ ...APPENDIX_A, ...over }).filter((e): e is [string, string] => e[1] !== undefined));
  const o: ConfigOutcome = parseUplinkConfig(keys, MAC);
  assert.equal(o.kind, 'ok', JSON.stringify(o));
  return (o as ConfigOutcome & { kind: 'ok' }).config;
}

function render(c: UplinkConfig, ipv6 = true, ifname = 'eth0', mac = MAC): string {
  const r = renderUplinkKeyfile({ ifname, mac, config: c, ipv6 });
  assert.ok(r.ok, JSON.stringify(r));
  return r.content;
}

/** section → key → value of a keyfile (duplicate keys would throw). */
function parse(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let sec: Record<string, string> | undefined;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      assert.equal(out[m[1]!], undefined, `section ${m[1]} twice`);
      sec = out[m[1]!] = {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(sec && eq > 0, `stray line ${JSON.stringify(line)}`);
    const k = line.slice(0, eq);
    assert.equal(sec[k], undefined, `key ${k} twice`);
    sec[k] = line.slice(eq + 1);
  }
  return out;
}

test('Appendix A: id, stable uuid from the MAC, interface, static IPv4 with gateway and DNS, static IPv6', () => {
  const k = parse(render(config()));
  assert.deepEqual(k.connection, { id: 'VM uplink eth0', uuid: 'de85f79b-8c3d-405f-a652-00163e5e6c00', type: '802-3-ethernet', 'interface-name': 'eth0' });
  assert.deepEqual(k.ethernet, { duplex: 'full', 'mac-address': MAC });
  assert.deepEqual(k.ipv4, { method: 'manual', 'may-fail': 'false', address1: '10.137.0.7/32,10.137.0.3', dns: '10.139.1.1;10.139.1.2;' });
  assert.equal(k.ipv6!.method, 'manual');
  assert.equal(k.ipv6!.address1, 'fd09:24ef:4179::a89:7/128,fd09:24ef:4179::a89:3');
  assert.equal(connectionUuid(MAC), k.connection!.uuid);
  // Same input, same bytes: a re-run finds nothing to do.
  assert.equal(render(config()), render(config()));
});

test('no IPv6 address, or IPv6 off on the link: ipv6 method=ignore', () => {
  assert.deepEqual(parse(render(config({ '/qubes-ip6': undefined, '/qubes-gateway6': undefined }))).ipv6, { method: 'ignore' });
  assert.deepEqual(parse(render(config(), false)).ipv6, { method: 'ignore' });
});

test('disable-default-route drops the gateways; disable-dns-server drops the DNS servers', () => {
  const noRoute = parse(render(config({ '/qubes-service/disable-default-route': '1' })));
  assert.equal(noRoute.ipv4!.address1, '10.137.0.7/32');
  assert.equal(noRoute.ipv6!.address1, 'fd09:24ef:4179::a89:7/128');
  assert.equal(noRoute.ipv4!.dns, '10.139.1.1;10.139.1.2;');
  const noDns = parse(render(config({ '/qubes-service/disable-dns-server': '1' })));
  assert.equal(noDns.ipv4!.dns, undefined);
  assert.equal(noDns.ipv6!.dns, undefined);
  assert.equal(noDns.ipv4!.address1, '10.137.0.7/32,10.137.0.3');
});

test('a netmask gives the prefix; no primary DNS falls back to the gateway; net-mtu is the MTU', () => {
  const k = parse(render(config({ '/qubes-netmask': '255.255.255.0', '/qubes-primary-dns': undefined, '/vm-config/net-mtu': '1400' })));
  assert.equal(k.ipv4!.address1, '10.137.0.7/24,10.137.0.3');
  assert.equal(k.ipv4!.dns, '10.137.0.3;10.139.1.2;');
  // The MTU is validated by withMtu in the apply; the renderer passes a validated one through.
  assert.equal(parse(render({ ...config(), mtu: 1400 })).ethernet!.mtu, '1400');
});

test('bad input is refused with the field, nothing rendered', () => {
  const c = config();
  const cases: [Partial<UplinkConfig> & Record<string, unknown>, string, string?, string?][] = [
    [{}, 'ifname', 'eth0\n[ipv4]'],
    [{}, 'ifname', '../etc'],
    [{}, 'ifname', 'a-very-long-interface-name'],
    [{}, 'mac', undefined, '00:16:3E:5E:6C:00'],
    [{}, 'mac', undefined, '00:16:3e:5e:6c:00\nid=x'],
    [{ ip: '10.137.0.7\naddress2=1.2.3.4/32' }, 'ip'],
    [{ gateway: '10.137.0.3;1.1.1.1' }, 'gateway'],
    [{ dns: ['10.139.1.1', 'x'] }, 'dns[1]'],
    [{ ip6: 'FD09::1' }, 'ip6'],
    [{ dns6: ['fd09::1;'] }, 'dns6[0]'],
    [{ prefix: 33 }, 'prefix'],
    [{ prefix6: -1 }, 'prefix6'],
    [{ mtu: 10 }, 'mtu'],
  ];
  for (const [over, field, ifname = 'eth0', mac = MAC] of cases) {
    const r = renderUplinkKeyfile({ ifname, mac, config: { ...c, ...over } as UplinkConfig, ipv6: true });
    assert.equal(r.ok, false, `${field}: ${JSON.stringify(over)} accepted`);
    if (!r.ok) {
      assert.equal(r.field, field);
      assert.ok(r.reason.length > 0);
    }
  }
});

test('the store: 0600 via a temporary file, unchanged content not rewritten, a wrong mode repaired', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qn-nm-keyfile-'));
  try {
    const conns = join(dir, 'system-connections');
    const path = keyfilePath(conns, 'eth0');
    assert.equal(path, join(conns, 'qubes-uplink-eth0'));
    const content = render(config());
    assert.equal(await writeKeyfile(path, conns, content), 'written');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const ino = statSync(path).ino;
    assert.equal(await writeKeyfile(path, conns, content), 'unchanged');
    assert.equal(statSync(path).ino, ino, 'an unchanged file is not replaced');
    chmodSync(path, 0o644);
    assert.equal(await writeKeyfile(path, conns, content), 'written');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(await writeKeyfile(path, conns, render(config({ '/qubes-ip': '10.137.0.8' }))), 'written');
    assert.deepEqual(readdirSync(conns), ['qubes-uplink-eth0'], 'no temporary file left');
    assert.equal(uuidOf(content), 'de85f79b-8c3d-405f-a652-00163e5e6c00');
    assert.equal(uuidOf('uuid=x\n'), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('kernel lines of the NetworkManager path: group 1 and the permanent neighbours, never up, no address or route', () => {
  const desired = desiredUplink('eth0', { kind: 'ok', config: config(), providesNetwork: false }, { ipv6: true });
  const fresh = nmKernelLines(parseKernelState(FRESH), desired);
  assert.deepEqual(fresh.sort(), [
    'link set dev eth0 group 1',
    'neigh replace 10.137.0.3 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent proto 75',
    'neigh replace fd09:24ef:4179::a89:3 dev eth0 lladdr fe:ff:ff:ff:ff:ff nud permanent proto 75',
  ]);
  // After our own direct path: neighbours and group are there; our routes go (NetworkManager adds its own).
  const after = nmKernelLines(parseKernelState(OURS), desired);
  assert.ok(after.every((l) => l.startsWith('route del ')), after.join('\n'));
  assert.ok(after.length > 0);
});

test('the choice: service from QubesDB first, else the flag file; nmcli must be installed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qn-nm-choice-'));
  try {
    const services = join(dir, 'qubes-service');
    const nmcli = join(dir, 'nmcli');
    const paths = { nmcli, connectionsDir: join(dir, 'c'), procDir: join(dir, 'proc') };
    const db = new MemoryQubesDB();
    assert.equal((await chooseNetworkManager(db, services, paths)).use, false);
    await db.write('/qubes-service/network-manager', '1');
    const missing = await chooseNetworkManager(db, services, paths);
    assert.deepEqual([missing.use, !missing.use && missing.serviceOn], [false, true]);
    writeFileSync(nmcli, '#!/bin/sh\n', { mode: 0o755 });
    assert.equal((await chooseNetworkManager(db, services, paths)).use, true);
    await db.write('/qubes-service/network-manager', '0');
    mkdirSync(services);
    writeFileSync(join(services, 'network-manager'), '');
    assert.equal((await chooseNetworkManager(db, services, paths)).use, false, 'QubesDB "0" wins over the flag file');
    await db.rm('/qubes-service/network-manager');
    assert.equal((await chooseNetworkManager(db, services, paths)).use, true, 'the flag file counts without a QubesDB entry');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
