// The guest daemon's control socket and the C client `qubes-net-uplink` (what the udev-started
// uplink unit runs), inside a namespace qube with the real QubesDB daemon and kernel:
// - with the daemon up, the client has the daemon apply/remove, without starting Node;
// - with the daemon down, it falls back to the Node CLI: same kernel result, same exit codes;
// - bad requests get an error reply, and the daemon keeps running.
// The daemon runs with a long debounce here, so that only the requests under test (and not its
// own reaction to the same change) configure the uplink.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipBatch } from '@qubes-net/common';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { APPENDIX_A_STATE, GuestLab, writeCliWrapper, type Agent, type EthState } from './harness.js';

const SOCKET = '/run/qubes-net/guest.sock';
const SLOW_DEBOUNCE = ['--debounce-ms', '60000'];

let lab: GuestLab;
let agent: Agent | undefined;
let dir: string;
let cli: string;
let marker: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qn-guest-ctl-'));
  cli = join(dir, 'qubes-net-guest.mjs');
  marker = join(dir, 'cli-runs');
  await writeCliWrapper(cli, marker);
  if (isRoot()) lab = await GuestLab.create('guest-ctl');
});
after(async () => {
  await agent?.stop();
  await lab?.destroy();
  await rm(dir, { recursive: true, force: true });
});

/** The CLI runs (argument lists) the client fell back to so far. */
async function cliRuns(): Promise<string[][]> {
  const text = await readFile(marker, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]);
}

/** One request line to the daemon's socket (from the host side), its one reply line parsed. */
function request(line: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(lab.client.hostPath(SOCKET));
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(line + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.destroy();
        resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      }
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`closed without a reply (got ${JSON.stringify(buf)})`)));
  });
}

/** Takes everything off eth0 (and the link down), behind the agent's back. */
async function unconfigure(): Promise<void> {
  const res = await ipBatch(['link set dev eth0 down', 'address flush dev eth0 scope global', 'neigh flush dev eth0 nud permanent'], { netns: lab.client.netns, force: true });
  assert.ok(res.ok || /Nothing to flush/.test(res.stderr), res.stderr);
  await writeFile(lab.client.hostPath('/etc/resolv.conf'), '');
}

async function startAgent(): Promise<void> {
  const prev = (await lab.status())?.generation;
  agent = lab.startAgent(SLOW_DEBOUNCE);
  await lab.waitStatus(prev, () => true, 'first pass of the agent');
  await waitFor('control socket', () => stat(lab.client.hostPath(SOCKET)).then(() => true, () => false));
}

async function stopAgent(): Promise<void> {
  assert.equal(await agent!.stop(), 0);
  agent = undefined;
}

interface Outcome {
  code: number;
  eth0: EthState;
  feedback: string | undefined;
}

/**
 * The same sequence of uplink events, each as `qubes-net-uplink` would get it from the unit;
 * the kernel state and the feedback after each. Identical with and without a daemon.
 */
async function scenario(): Promise<Record<string, Outcome>> {
  const out: Record<string, Outcome> = {};
  const step = async (name: string, args: string[], before?: () => Promise<void>) => {
    await before?.();
    const res = await lab.uplink(args, cli);
    const s = await lab.status();
    out[name] = { code: res.code, eth0: await lab.eth0(), feedback: s ? `${s.status} ${s.detail}` : undefined };
  };
  await step('apply from scratch', ['apply', 'eth0'], async () => {
    await lab.writeAppendixA();
    await unconfigure();
  });
  await step('apply again', ['apply', 'eth0']);
  await step('apply with a bad gateway', ['apply', 'eth0'], () => lab.writeKeys({ '/qubes-gateway': '10.137.0.3;reboot' }));
  await step('apply corrected', ['apply', 'eth0'], () => lab.writeAppendixA());
  await step('apply a missing interface', ['apply', 'eth5']);
  await step('remove', ['remove', 'eth0']);
  await step('apply after remove', ['apply', 'eth0']);
  await step('apply without /qubes-ip', ['apply', 'eth0'], () => lab.writeKeys({ '/qubes-ip': undefined }));
  await lab.writeAppendixA();
  return out;
}

let withDaemon: Record<string, Outcome> | undefined;

test('daemon up: qubes-net-uplink has the daemon apply and remove, without starting Node', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeAppendixA();
  await startAgent();
  const runsBefore = (await cliRuns()).length;
  withDaemon = await scenario();
  assert.equal((await cliRuns()).length, runsBefore, 'the client never fell back to the CLI');
  assert.equal(agent!.child.exitCode, null, 'the daemon is still running');
  const steps = Object.keys(withDaemon).length;
  const served = await waitFor('a log line per request', () => {
    const l = agent!.logs.filter((x) => x.msg === 'control request served');
    return l.length >= steps ? l : undefined;
  });
  assert.equal(served.length, steps);

  assert.equal(withDaemon['apply from scratch']!.code, 0);
  assert.deepEqual(withDaemon['apply from scratch']!.eth0, APPENDIX_A_STATE, 'configured when the client exits, despite the long debounce');
  assert.equal(withDaemon['apply from scratch']!.feedback, 'ok eth0 10.137.0.7/32 fd09:24ef:4179::a89:7/128');
  assert.equal(withDaemon['apply again']!.code, 0);
  assert.equal(withDaemon['apply with a bad gateway']!.code, 2);
  assert.equal(withDaemon['apply with a bad gateway']!.eth0.up, false, 'fails closed');
  assert.deepEqual(withDaemon['apply with a bad gateway']!.eth0.addresses, []);
  assert.equal(withDaemon['apply corrected']!.code, 0);
  assert.equal(withDaemon['apply a missing interface']!.code, 3);
  assert.equal(withDaemon['apply a missing interface']!.feedback, 'unconfigured eth5 interface missing');
  assert.equal(withDaemon['remove']!.code, 0);
  assert.equal(withDaemon['remove']!.eth0.up, false);
  assert.deepEqual(withDaemon['remove']!.eth0.addresses, []);
  assert.equal(withDaemon['remove']!.feedback, 'unconfigured eth0 removed');
  assert.deepEqual(withDaemon['apply after remove']!.eth0, APPENDIX_A_STATE);
  assert.equal(withDaemon['apply without /qubes-ip']!.code, 0);
});

test('daemon up: a removed uplink stays down through the daemon\'s own passes until the next apply', async (t) => {
  if (!needRoot(t)) return;
  assert.equal((await lab.uplink(['apply', 'eth0'], cli)).code, 0);
  assert.equal((await lab.uplink(['remove', 'eth0'], cli)).code, 0);
  const passes = (await request('{"op":"status"}')).passes as number;
  // A request for another interface runs a pass of the uplink first: it must leave eth0 alone.
  assert.equal((await lab.uplink(['apply', 'eth7'], cli)).code, 3);
  const st = await request('{"op":"status"}');
  assert.ok((st.passes as number) > passes, JSON.stringify(st));
  assert.deepEqual(st.removed, ['eth0']);
  const e = await lab.eth0();
  assert.equal(e.up, false);
  assert.deepEqual(e.addresses, []);
  assert.equal((await lab.uplink(['apply', 'eth0'], cli)).code, 0);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  assert.deepEqual((await request('{"op":"status"}')).removed, []);
});

test('daemon up: bad requests get an error reply and the daemon keeps running', async (t) => {
  if (!needRoot(t)) return;
  assert.equal((await stat(lab.client.hostPath(SOCKET))).mode & 0o777, 0o600, 'root only');
  const logsBefore = agent!.logs.length;
  const bad = [
    'not json',
    '[]',
    '{"op":"reboot"}',
    '{"op":"apply","iface":"eth0;reboot"}',
    '{"op":"apply","iface":"-eth0"}',
    '{"op":"apply","iface":"eth0","force":true}',
    '{"op":"remove"}',
    `{"op":"apply","iface":"${'x'.repeat(3000)}"}`,
  ];
  for (const line of bad) {
    const reply = await request(line);
    assert.equal(reply.ok, false, line.slice(0, 60));
    assert.equal(reply.exitCode, 64);
    assert.equal(typeof reply.error, 'string');
  }
  // The log comes through the agent's stdout, which may lag behind the replies.
  const logged = await waitFor('an error log per bad request', () => {
    const l = agent!.logs.slice(logsBefore).filter((x) => x.msg === 'bad control request');
    return l.length >= bad.length ? l : undefined;
  });
  assert.equal(logged.length, bad.length);
  assert.ok(logged.every((l) => l.level === 50 && l.source === 'control-socket' && typeof l.value === 'string' && l.value.length < 200), JSON.stringify(logged));
  // A line that never ends is cut off at the size limit, not buffered without bound.
  const huge = await request('{"op":"apply","iface":"' + 'y'.repeat(100_000));
  assert.equal(huge.ok, false);
  assert.match(String(huge.error), /longer than/);

  const status = await request('{"op":"status"}');
  assert.equal(status.ok, true);
  assert.equal(status.uplink, 'eth0');
  assert.equal(agent!.child.exitCode, null);
  assert.equal((await lab.uplink(['apply', 'eth0'], cli)).code, 0, 'still serving');
});

test('daemon up: the Node CLI\'s apply and remove are served by the daemon, unless --no-daemon', async (t) => {
  if (!needRoot(t)) return;
  const servedCount = () => agent!.logs.filter((x) => x.msg === 'control request served').length;
  const viaDaemon = async (args: string[]) => {
    const before = servedCount();
    const passes = (await request('{"op":"status"}')).passes as number;
    const res = await lab.cli(args);
    await waitFor('the daemon logs the request', () => servedCount() > before);
    if (args[0] === 'apply') assert.ok(((await request('{"op":"status"}')).passes as number) > passes, 'the daemon ran a pass');
    assert.ok(res.logs.some((l) => l.msg === 'served by the guest daemon'), JSON.stringify(res.logs));
    assert.ok(!res.logs.some((l) => /^uplink /.test(l.msg) || l.msg === 'qubesdb feedback write failed'), 'not in-process');
    return res;
  };
  await unconfigure();
  assert.equal((await viaDaemon(['apply', 'eth0'])).code, 0);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE, 'configured by the daemon, despite its long debounce');
  assert.equal((await viaDaemon(['apply'])).code, 0);
  assert.equal((await viaDaemon(['apply', 'eth5'])).code, 3, 'same exit code as in-process');
  assert.equal((await viaDaemon(['remove', 'eth0'])).code, 0);
  assert.equal((await lab.eth0()).up, false);
  assert.deepEqual((await request('{"op":"status"}')).removed, ['eth0'], 'the daemon knows it removed eth0');
  await lab.writeKeys({ '/qubes-gateway': '10.137.0.3;reboot' });
  assert.equal((await viaDaemon(['apply', 'eth0'])).code, 2);
  await lab.writeAppendixA();
  assert.equal((await viaDaemon(['apply', 'eth0'])).code, 0);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);

  // --no-daemon: this process does it; the daemon hears nothing.
  await unconfigure();
  const before = servedCount();
  const own = await lab.cli(['apply', 'eth0', '--no-daemon']);
  assert.equal(own.code, 0);
  assert.ok(!own.logs.some((l) => l.msg === 'served by the guest daemon'));
  assert.ok(own.logs.some((l) => l.msg === 'uplink configured'), 'configured in-process');
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  assert.equal(servedCount(), before, 'the daemon served nothing');
  assert.equal((await lab.cli(['apply', 'eth5', '--no-daemon'])).code, 3);
  assert.equal(agent!.child.exitCode, null);
});

test('daemon up, in a qube that provides network: the reply comes after the ip-change hook and the driver notice', async (t) => {
  if (!needRoot(t)) return;
  const hookDir = lab.client.hostPath('/rw/config');
  await mkdir(hookDir, { recursive: true });
  const hook = join(hookDir, 'qubes-ip-change-hook');
  // Slow on purpose: a reply sent before the hook finished would find no file yet.
  await writeFile(hook, '#!/bin/sh\nsleep 0.3\necho ran >> /rw/config/hook-ran\n');
  await chmod(hook, 0o755);
  const requests: string[] = [];
  const driver: Server = createServer((c) => {
    c.on('data', (b) => {
      requests.push(b.toString());
      c.end('{"ok":true}\n');
    });
  });
  await new Promise<void>((r) => driver.listen(lab.client.hostPath('/run/qubes-net/driver.sock'), r));
  t.after(async () => {
    await new Promise((r) => driver.close(r));
    await rm(hook, { force: true });
    await rm(join(hookDir, 'hook-ran'), { force: true });
    await lab.db.rm('/qubes-netvm-network');
  });
  await lab.writeAppendixA({ '/qubes-netvm-network': '10.137.0.7' });
  const res = await lab.uplink(['apply', 'eth0'], cli);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(await readFile(join(hookDir, 'hook-ran'), 'utf8'), 'ran\n');
  assert.deepEqual(requests, ['{"op":"dns-changed"}\n']);
});

test('the client rejects bad arguments itself (exit 64) and never falls back for them', async (t) => {
  if (!needRoot(t)) return;
  const runsBefore = (await cliRuns()).length;
  for (const args of [[], ['apply'], ['frob', 'eth0'], ['apply', 'eth0;reboot'], ['apply', '-eth0'], ['apply', 'abcdefghijklmnop'], ['apply', 'eth0', 'extra']]) {
    const res = await lab.uplink(args, cli);
    assert.equal(res.code, 64, JSON.stringify(args));
    assert.match(res.stderr, /qubes-net-uplink: /);
  }
  assert.equal((await cliRuns()).length, runsBefore);
});

test('a second daemon refuses to start while one answers on the socket', async (t) => {
  if (!needRoot(t)) return;
  const second = lab.startAgent();
  assert.equal(await second.exited, 3);
  await waitFor('the second daemon says why it stopped', () => second.logs.some((l) => l.msg === 'another guest daemon is running'));
  assert.equal(agent!.child.exitCode, null);
  assert.equal((await request('{"op":"status"}')).ok, true, 'the first one still owns the socket');
});

test('daemon down: the client falls back to the Node CLI, with the same results and exit codes', async (t) => {
  if (!needRoot(t)) return;
  assert.ok(withDaemon, 'the daemon-up scenario ran first');
  await stopAgent();
  await assert.rejects(stat(lab.client.hostPath(SOCKET)), 'the socket is removed at stop');
  const runsBefore = (await cliRuns()).length;
  const withoutDaemon = await scenario();
  assert.equal((await cliRuns()).length - runsBefore, Object.keys(withoutDaemon).length, 'one CLI run per event');
  assert.deepEqual((await cliRuns()).slice(runsBefore)[0], ['apply', 'eth0', '--no-daemon']);
  assert.deepEqual(withoutDaemon, withDaemon);
});

test('daemon down: the Node CLI applies and removes in its own process', async (t) => {
  if (!needRoot(t)) return;
  await assert.rejects(stat(lab.client.hostPath(SOCKET)), 'no daemon');
  await unconfigure();
  const a = await lab.cli(['apply', 'eth0']);
  assert.equal(a.code, 0);
  assert.ok(!a.logs.some((l) => l.msg === 'served by the guest daemon'));
  assert.ok(a.logs.some((l) => l.msg === 'no guest daemon, working in this process'), JSON.stringify(a.logs.map((l) => l.msg)));
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  assert.equal((await lab.cli(['apply', 'eth5'])).code, 3);
  assert.equal((await lab.cli(['remove', 'eth0'])).code, 0);
  assert.equal((await lab.eth0()).up, false);
  assert.equal((await lab.cli(['apply', 'eth0'])).code, 0);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
});

test('a stale socket file (daemon killed) is replaced by the next daemon; meanwhile the client falls back', async (t) => {
  if (!needRoot(t)) return;
  await startAgent();
  agent!.child.kill('SIGKILL');
  await agent!.exited;
  agent = undefined;
  assert.ok((await stat(lab.client.hostPath(SOCKET))).isSocket(), 'a killed daemon leaves its socket file');
  await unconfigure();
  const own = await lab.cli(['apply', 'eth0']);
  assert.equal(own.code, 0, 'nobody listening: the Node CLI does it itself');
  assert.ok(!own.logs.some((l) => l.msg === 'served by the guest daemon'));
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  const runsBefore = (await cliRuns()).length;
  await unconfigure();
  assert.equal((await lab.uplink(['apply', 'eth0'], cli)).code, 0);
  assert.equal((await cliRuns()).length, runsBefore + 1, 'nobody listening: the CLI did it');
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
  await startAgent();
  await unconfigure();
  assert.equal((await lab.uplink(['apply', 'eth0'], cli)).code, 0);
  assert.equal((await cliRuns()).length, runsBefore + 1, 'served by the new daemon');
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
});
