// The daemon as a program: arguments, socket names and modes, run dir creation, stale socket
// replacement, readiness (fd and log event), and a clean stop on SIGTERM/SIGINT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { MessageType, parseDaemonArgs } from '@qubes-net/qubesdb';
import { DAEMON_BIN, startQubesDB } from '../helpers/qubesdb.js';
import { RawQdbClient } from '../helpers/raw-qdb.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'qnet-qdbcli-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('argument parsing: options, --opt=value, upstream positional form, and refusals', () => {
  assert.deepEqual(parseDaemonArgs([]), { runDir: '/var/run/qubes' });
  assert.deepEqual(parseDaemonArgs(['--run-dir', '/tmp/x', '--name', 'work', '--rw-socket-perms', '0660', '--ready-fd', '3']), {
    runDir: '/tmp/x', name: 'work', rwSocketPerms: 0o660, readyFd: 3,
  });
  assert.deepEqual(parseDaemonArgs(['--rw-socket-perms=640', '--run-dir=/r']), { runDir: '/r', rwSocketPerms: 0o640 });
  assert.deepEqual(parseDaemonArgs(['0']), { runDir: '/var/run/qubes' });
  assert.deepEqual(parseDaemonArgs(['0', 'dom0']), { runDir: '/var/run/qubes', name: 'dom0' });
  for (const bad of [
    ['--rw-socket-perms', '999'], ['--rw-socket-perms', '1777'], ['--rw-socket-perms', 'rw'], ['--ready-fd', '-1'], ['--ready-fd'],
    ['--name', '../evil'], ['--name', 'a/b'], ['--name', ''], ['--name', '-x'], ['5'], ['0', 'a', 'b'], ['--bogus'], ['--run-dir', ''],
  ]) {
    assert.throws(() => parseDaemonArgs(bad), Error, JSON.stringify(bad));
  }
});

test('sockets: names, modes (0666 default; --rw-socket-perms for RW only), run dir created 0775', async (t) => {
  const base = tempDir(t);
  const runDir = join(base, 'deep', 'run');
  const db = await startQubesDB({ runDir, name: 'sys-net', rwSocketPerms: '0640' });
  t.after(() => db.stop());
  assert.equal(db.socketPath, join(runDir, 'qubesdb.sys-net.sock'));
  assert.equal(db.roSocketPath, join(runDir, 'qubesdb.sys-net.ro.sock'));
  assert.equal(statSync(runDir).mode & 0o777, 0o775);
  assert.ok(statSync(db.socketPath).isSocket());
  assert.equal(statSync(db.socketPath).mode & 0o777, 0o640);
  assert.equal(statSync(db.roSocketPath).mode & 0o777, 0o666);
  const c = await RawQdbClient.connect(db.roSocketPath);
  assert.equal(await c.read('/x'), undefined);
  await c.close();

  const plain = await startQubesDB();
  t.after(() => plain.stop());
  assert.ok(plain.socketPath.endsWith('/qubesdb.sock'));
  assert.equal(statSync(plain.socketPath).mode & 0o777, 0o666);
  assert.equal(statSync(plain.roSocketPath).mode & 0o777, 0o666);
});

test('stale socket files are replaced; a regular file in the way is refused', async (t) => {
  const runDir = tempDir(t);
  // A socket file left behind by a process that died without cleaning up.
  for (const name of ['qubesdb.sock', 'qubesdb.ro.sock']) {
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(join(runDir, name))}, () => process.exit(0))`]);
    assert.equal(r.status, 0);
    assert.ok(statSync(join(runDir, name)).isSocket());
  }
  const db = await startQubesDB({ runDir });
  const c = await RawQdbClient.connect(db.socketPath);
  assert.equal((await c.write('/k', 'v')).type, 7);
  await c.close();
  await db.stop();

  writeFileSync(join(runDir, 'qubesdb.sock'), 'not a socket');
  await assert.rejects(startQubesDB({ runDir }), /exited before ready/);
  assert.equal(statSync(join(runDir, 'qubesdb.sock')).isFile(), true, 'left alone');
});

/** Spawns the daemon bin directly and waits for its `ready` log line. */
async function spawnBin(args: string[]): Promise<{ child: ReturnType<typeof spawn>; ready: Record<string, unknown>; readyFd: Promise<string> }> {
  const child = spawn(process.execPath, [DAEMON_BIN, ...args, '--ready-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let out = '';
  let fd3 = '';
  const pipe = child.stdio[3] as Readable;
  pipe.on('data', (b: Buffer) => (fd3 += b.toString()));
  const readyFd = new Promise<string>((resolve) => pipe.once('end', () => resolve(fd3)));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      for (const line of out.split('\n')) {
        if (!line.trim()) continue;
        const ev = JSON.parse(line) as Record<string, unknown>;
        if (ev.msg === 'ready') resolve(ev);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
  return { child, ready, readyFd };
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: sockets closed and removed, exit 0; ready was told on fd and in the log`, async (t) => {
    const runDir = tempDir(t);
    const { child, ready } = await spawnBin(['--run-dir', runDir]);
    const sock = join(runDir, 'qubesdb.sock');
    assert.equal(ready.socket, sock);
    assert.equal(ready.roSocket, join(runDir, 'qubesdb.ro.sock'));
    assert.equal(ready.component, 'qubesdb-daemon');
    const c = await RawQdbClient.connect(sock);
    await c.watch('/w');
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    assert.equal(await exited, 0);
    await c.waitClosed();
    assert.equal(existsSync(sock), false);
    assert.equal(existsSync(join(runDir, 'qubesdb.ro.sock')), false);
  });
}

test('--ready-fd receives exactly "ready\\n" once listening', async (t) => {
  const runDir = tempDir(t);
  const { child, readyFd } = await spawnBin(['--run-dir', runDir]);
  // The daemon closes the fd after writing, so 'end' comes while it still runs.
  assert.equal(await readyFd, 'ready\n');
  assert.equal(child.exitCode, null);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
});

test('bad arguments: exit 2 with usage, nothing created', (t) => {
  const runDir = join(tempDir(t), 'never');
  const r = spawnSync(process.execPath, [DAEMON_BIN, '--run-dir', runDir, '--rw-socket-perms', '888'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage: qubes-net-qdb daemon/);
  assert.equal(existsSync(runDir), false);
});

test('limit flags: parsed into limits, checked together, reported in the ready line and enforced', async (t) => {
  assert.deepEqual(parseDaemonArgs(['--max-watches', '10', '--idle-timeout-ms=0', '--partial-timeout-ms', '500', '--max-total-output', '1048576']), {
    runDir: '/var/run/qubes', limits: { maxWatchesPerClient: 10, idleTimeoutMs: 0, partialTimeoutMs: 500, maxTotalOutput: 1048576 },
  });
  assert.deepEqual(parseDaemonArgs(['--max-clients', '64', '--rw-reserved-slots', '8', '--max-client-output', '65536', '--max-read-only-watches', '9']), {
    runDir: '/var/run/qubes', limits: { maxClients: 64, rwReservedSlots: 8, maxClientOutput: 65536, maxReadOnlyWatches: 9 },
  });
  for (const bad of [['--max-watches', '-1'], ['--max-watches', '1e3'], ['--idle-timeout-ms'], ['--max-clients', '0'], ['--max-clients', '8', '--rw-reserved-slots', '8'], ['--max-client-output', '0']]) {
    assert.throws(() => parseDaemonArgs(bad), Error, JSON.stringify(bad));
  }
  const runDir = tempDir(t);
  const { child, ready } = await spawnBin(['--run-dir', runDir, '--max-watches', '2']);
  t.after(() => void child.kill('SIGTERM'));
  assert.equal((ready.limits as Record<string, unknown>).maxWatchesPerClient, 2);
  assert.equal((ready.limits as Record<string, unknown>).idleTimeoutMs, 60_000, 'defaults for the rest');
  const c = await RawQdbClient.connect(join(runDir, 'qubesdb.ro.sock'));
  t.after(() => c.close());
  assert.deepEqual([(await c.watch('/a')).type, (await c.watch('/b')).type, (await c.watch('/c')).type], [MessageType.RespOk, MessageType.RespOk, MessageType.RespError]);
});
