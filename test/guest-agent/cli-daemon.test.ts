// `qubes-net-guest apply|remove` started directly (the Node CLI) against stand-in daemons on a
// socket in a temporary directory: they ask the daemon first and exit with its reply's
// exitCode; they work in their own process only when no daemon answers, or with --no-daemon.
// The in-process path here points at a QubesDB directory that does not exist, so it stops at
// "QubesDB not reachable" (exit 4) before touching anything: no root, no network changes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeDaemon, replyWith } from './fake-daemon.js';
import { CLI, parseLogLines, type LogLine } from './harness.js';

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qn-cli-daemon-'));
});
after(() => rm(dir, { recursive: true, force: true }));

function runCli(args: string[], socket: string): Promise<{ code: number | null; logs: LogLine[] }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args, '--control-socket', socket, '--qubesdb-run-dir', join(dir, 'no-qubesdb'), '--state-dir', join(dir, 'state')], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', QUBES_NET_LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let stdout = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.on('close', (code) => resolve({ code, logs: parseLogLines(stdout) }));
  });
}

async function withDaemon(answer: (line: string, sock: Socket) => void, args: string[]) {
  const d = await fakeDaemon(dir, answer);
  try {
    const res = await runCli(args, d.path);
    return { ...res, requests: d.requests };
  } finally {
    await new Promise((r) => d.server.close(r));
  }
}

const served = (logs: LogLine[]) => logs.filter((l) => l.msg === 'served by the guest daemon');

test('apply and remove are handed to a daemon that answers, with its exit code', async () => {
  const a = await withDaemon(replyWith('{"ok":true,"ifname":"eth0","result":"ok","detail":"eth0 10.137.0.7/32","exitCode":0}\n'), ['apply', 'eth0']);
  assert.deepEqual(a.requests, ['{"op":"apply","iface":"eth0"}']);
  assert.equal(a.code, 0);
  assert.equal(served(a.logs).length, 1);
  assert.equal(served(a.logs)[0]!.detail, 'eth0 10.137.0.7/32');
  const noIface = await withDaemon(replyWith('{"ok":true,"result":"ok","exitCode":0}\n'), ['apply']);
  assert.deepEqual(noIface.requests, ['{"op":"apply"}']);
  assert.equal(noIface.code, 0);
  const r = await withDaemon(replyWith('{"ok":true,"result":"unconfigured","detail":"eth1 removed","exitCode":0}\n'), ['remove', 'eth1']);
  assert.deepEqual(r.requests, ['{"op":"remove","iface":"eth1"}']);
  assert.equal(r.code, 0);
  for (const code of [2, 3, 4]) {
    const e = await withDaemon(replyWith(`{"ok":true,"result":"error","detail":"bad","exitCode":${code}}\n`), ['apply', 'eth0']);
    assert.equal(e.code, code);
    assert.equal(served(e.logs)[0]!.level, 50);
  }
  const refused = await withDaemon(replyWith('{"ok":false,"error":"nope","exitCode":64}\n'), ['apply', 'eth0']);
  assert.equal(refused.code, 64);
  assert.ok(refused.logs.some((l) => l.msg === 'the guest daemon refused the request' && l.error === 'nope'));
});

test('unreadable replies are failures (3), never a fallback to a second writer', async () => {
  for (const bad of ['hello\n', '{"ok":true}\n', '{"ok":true,"exitCode":300}\n', '{"ok":true,"exitCode":"0"}\n', '[]\n', `{"ok":true,"detail":"${'x'.repeat(20_000)}","exitCode":0}`]) {
    const r = await withDaemon(replyWith(bad), ['apply', 'eth0']);
    assert.equal(r.code, 3, bad.slice(0, 40));
    assert.ok(!r.logs.some((l) => l.msg === 'qubesdb not reachable'), 'did not work in-process');
  }
});

test('no daemon (socket missing, or closed without a reply): works in this process', async () => {
  const missing = await runCli(['apply', 'eth0'], join(dir, 'absent.sock'));
  assert.equal(missing.code, 4, 'in-process: QubesDB not reachable');
  assert.ok(missing.logs.some((l) => l.msg === 'qubesdb not reachable'));
  assert.equal(served(missing.logs).length, 0);
  const closed = await withDaemon((_l, sock) => sock.destroy(), ['apply', 'eth0']);
  assert.equal(closed.requests.length, 1);
  assert.equal(closed.code, 4);
  assert.ok(closed.logs.some((l) => l.msg === 'qubesdb not reachable'));
});

test('--no-daemon: never asks the daemon', async () => {
  const r = await withDaemon(replyWith('{"ok":true,"result":"ok","exitCode":0}\n'), ['apply', 'eth0', '--no-daemon']);
  assert.deepEqual(r.requests, []);
  assert.equal(r.code, 4);
  assert.equal(served(r.logs).length, 0);
});
