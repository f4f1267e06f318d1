// Small parsers of tool output and of the control protocol (pure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBatchErrors, parseConntrackList, parseMonitorLine, parseRequest, formatReply, parseOptions } from '@qubes-net/driver-agent';

test('ip -batch errors are attributed to their line numbers', () => {
  const m = parseBatchErrors('Cannot find device "vif9.0"\nCommand failed -:3\nRTNETLINK answers: No such process\nCommand failed -:7\n');
  assert.deepEqual([...m], [[3, 'Cannot find device "vif9.0"'], [7, 'RTNETLINK answers: No such process']]);
});

test('conntrack -L: the original direction of each entry', () => {
  const text = 'tcp      6 431999 ESTABLISHED src=10.137.0.7 dst=203.0.113.80 sport=40000 dport=80 src=203.0.113.80 dst=192.0.2.2 sport=80 dport=40000 [ASSURED] mark=0 use=1\nudp      17 29 src=10.137.0.8 dst=198.51.100.53 sport=5353 dport=53 [UNREPLIED] src=198.51.100.53 dst=192.0.2.2 sport=53 dport=5353 mark=0 use=1\n';
  assert.deepEqual(parseConntrackList(text), [{ src: '10.137.0.7', dst: '203.0.113.80' }, { src: '10.137.0.8', dst: '198.51.100.53' }]);
});

test('ip monitor lines: links, addresses, deletions', () => {
  assert.deepEqual(parseMonitorLine('5: vif5.0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group 2'), { ifname: 'vif5.0', kind: 'link', deleted: false });
  assert.deepEqual(parseMonitorLine('Deleted 5: vif5.0@if4: <BROADCAST,MULTICAST> mtu 1500'), { ifname: 'vif5.0', kind: 'link', deleted: true });
  assert.deepEqual(parseMonitorLine('2: eth0    inet 192.0.2.2/24 scope global eth0\\       valid_lft forever'), { ifname: 'eth0', kind: 'addr', deleted: false });
  assert.deepEqual(parseMonitorLine('Deleted 2: eth0    inet6 fd00::2/64 scope global'), { ifname: 'eth0', kind: 'addr', deleted: true });
  assert.equal(parseMonitorLine('garbage'), undefined);
});

test('control requests: known ops only, objects only', () => {
  assert.deepEqual(parseRequest('{"op":"status"}'), { ok: true, request: { op: 'status' } });
  const on = parseRequest('{"op":"online","vif":"vif5.0","ips":["10.137.0.7"],"mac":"00:16:3e:5e:6c:00","type":"vif","extra":1}');
  assert.ok(on.ok && on.request.op === 'online' && !('extra' in on.request));
  assert.equal(parseRequest('nope').ok, false);
  assert.equal(parseRequest('[1]').ok, false);
  assert.equal(parseRequest('{"op":"reboot"}').ok, false);
});

test('replies put ok first (the C client checks the prefix)', () => {
  assert.equal(formatReply({ error: 'x', ok: false } as never), '{"ok":false,"error":"x"}\n');
  assert.ok(formatReply({ ok: true, vif: 'vif5.0' }).startsWith('{"ok":true'));
});

test('options: every path is configurable, bad window refused', () => {
  const o = parseOptions(['--control-socket', '/tmp/x.sock', '--resolv-conf', '/tmp/r', '--no-firewall', '--hooks-dir', '/tmp/h', '--json', 'online']);
  assert.equal(o.controlSocket, '/tmp/x.sock');
  assert.equal(o.resolvConf, '/tmp/r');
  assert.equal(o.firewall, 'off');
  assert.equal(o.hooksDir, '/tmp/h');
  assert.equal(o.json, true);
  assert.deepEqual(o.positionals, ['online']);
  assert.throws(() => parseOptions(['--batch-window-ms', '-1']));
});

test('firewall notification: only a process that is the firewall (or the agent) gets SIGHUP', async () => {
  const { isFirewallCmdline, notifyFirewall } = await import('@qubes-net/driver-agent');
  const cl = (...a: string[]) => a.join('\0') + '\0';
  assert.equal(isFirewallCmdline(cl('node', '/usr/lib/qubes-net/node_modules/@qubes-net/firewall/dist/cli.js', 'run')), true);
  assert.equal(isFirewallCmdline(cl('/usr/bin/node', 'packages/firewall/dist/cli.js', 'run')), true);
  assert.equal(isFirewallCmdline(cl('/usr/bin/qubes-net-agent', 'run')), true);
  assert.equal(isFirewallCmdline(cl('sleep', '1000')), false);
  assert.equal(isFirewallCmdline(cl('node', '/tmp/evil/qubes-net-firewall-not.js')), false);
  // A stale pid file naming a live process that is not the firewall (this test runner).
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'qn-drv-pid-'));
  const f = join(dir, 'firewall.pid');
  try {
    writeFileSync(f, `${process.pid}\n`);
    assert.equal(await notifyFirewall(f), 'not-the-firewall');
    assert.equal(await notifyFirewall(f + '.missing'), 'no-pidfile');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
