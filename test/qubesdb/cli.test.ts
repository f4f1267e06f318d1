// qubes-net-qdb against the real daemon: upstream's commands, flags, output format and exit
// codes, plus --run-dir, -d, the qubesdb-CMD symlink names and the daemon subcommand.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { run, type RunResult } from '@qubes-net/common';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'qubesdb', 'dist', 'cli.js');

describe('qubes-net-qdb', () => {
  let daemon: RunningQubesDB;
  const qdb = (...args: string[]): Promise<RunResult> =>
    run(process.execPath, [CLI, ...args.slice(0, 1), '--run-dir', daemon.runDir, ...args.slice(1)], { allowFailure: true });

  before(async () => {
    daemon = await startQubesDB();
  });
  after(() => daemon?.stop());

  test('write pairs, then read several paths', async () => {
    const w = await qdb('write', '/cli/a', 'alpha', '/cli/b', 'beta', '/cli/empty', '');
    assert.equal(w.exitCode, 0, w.stderr);
    const r = await qdb('read', '/cli/a', '/cli/b', '/cli/empty');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'alpha\nbeta\n\n');
  });

  test('read: exit 2 when a key is missing, the others still printed; -q silences', async () => {
    await qdb('write', '/cli/here', 'yes');
    const r = await qdb('read', '/cli/missing', '/cli/here');
    assert.equal(r.exitCode, 2);
    assert.equal(r.stdout, 'yes\n');
    assert.match(r.stderr, /Failed to read \/cli\/missing/);
    const q = await qdb('read', '-q', '/cli/missing');
    assert.equal(q.exitCode, 2);
    assert.equal(q.stderr, '');
  });

  test('read: exit 1 when something other than a missing key failed', async () => {
    const r = await qdb('read', '/cli/missing', 'not-a-path');
    assert.equal(r.exitCode, 1);
  });

  test('read -e / --default for a missing key', async () => {
    for (const args of [['-e', 'fallback'], ['--default', 'fallback'], ['--default=fallback'], ['-efallback']]) {
      const r = await qdb('read', ...args, '/cli/missing');
      assert.equal(r.exitCode, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, 'fallback\n');
    }
    await qdb('write', '/cli/present', 'real');
    assert.equal((await qdb('read', '-e', 'fallback', '/cli/present')).stdout, 'real\n');
    assert.equal((await qdb('read', '-e', 'x', '/cli/a', '/cli/b')).exitCode, 1, '-e takes exactly one path');
  });

  test('read -f prints full paths; values are escaped unless -r', async () => {
    await qdb('write', '/cli/esc', 'tab\there é');
    assert.equal((await qdb('read', '-f', '/cli/esc')).stdout, '/cli/esc = tab\\x09here \\xc3\\xa9\n');
    assert.equal((await qdb('read', '-r', '/cli/esc')).stdout, 'tab\there é\n');
    assert.equal((await qdb('read', '-fr', '/cli/esc')).stdout, '/cli/esc = tab\there é\n');
  });

  test('read -x removes the key after reading it', async () => {
    await qdb('write', '/cli/once', 'gone soon');
    const r = await qdb('read', '-x', '/cli/once');
    assert.equal(r.stdout, 'gone soon\n');
    assert.equal((await qdb('read', '/cli/once')).exitCode, 2);
  });

  test('read -w waits until the key exists', async () => {
    const waiting = qdb('read', '-w', '/cli/later');
    // Whether the write comes before or after the watch is registered, read -w must finish.
    await qdb('write', '/cli/later', 'arrived');
    const r = await waiting;
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'arrived\n');
  });

  test('write with an odd number of arguments is a usage error', async () => {
    const r = await qdb('write', '/cli/x');
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /usage/);
  });

  test('write of a bad path fails with exit 1', async () => {
    const r = await qdb('write', '/cli/bad/', 'x');
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /Failed to write \/cli\/bad\//);
  });

  test('rm: keys, a directory, and missing keys', async () => {
    await qdb('write', '/rmdir/a', '1', '/rmdir/b/c', '2', '/rmkey', '3');
    assert.equal((await qdb('rm', '/rmkey', '/never-there')).exitCode, 0);
    assert.equal((await qdb('rm', '/rmdir/')).exitCode, 0);
    assert.equal((await qdb('list', '/rm')).stdout, '');
  });

  test('list: paths relative to the argument, -f for full paths, exactly one path', async () => {
    await qdb('write', '/ls/qubes-ip', '1', '/ls/qubes-ip6', '2', '/ls/z/deep', '3');
    assert.equal((await qdb('list', '/ls/')).stdout, 'qubes-ip\nqubes-ip6\nz/deep\n');
    assert.equal((await qdb('list', '-f', '/ls/qubes-ip')).stdout, '/ls/qubes-ip\n/ls/qubes-ip6\n');
    assert.equal((await qdb('list', '/ls/a', '/ls/b')).exitCode, 1);
  });

  test('multiread: "relpath = value", escaped, several prefixes', async () => {
    await qdb('write', '/mr/a', 'x y', '/mr/b', 'é', '/mr2/c', 'z');
    const r = await qdb('multiread', '/mr/', '/mr2/');
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'a = x y\nb = \\xc3\\xa9\nc = z\n');
    assert.equal((await qdb('multiread', '-f', '-r', '/mr/')).stdout, '/mr/a = x y\n/mr/b = é\n');
  });

  test('watch -n N prints N changed paths and exits', async () => {
    const child = spawn(process.execPath, [CLI, 'watch', '--run-dir', daemon.runDir, '-n', '2', '/cw/exact', '/cw/dir/'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(child.stdout);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let done = false;
    void exited.then(() => (done = true));
    // The watch may not be registered yet: keep writing until the watcher has had enough.
    await waitFor('watch to report two events', async () => {
      if (done) return true;
      await qdb('write', '/cw/dir/x', '1');
      return false;
    });
    assert.equal(await exited, 0);
    assert.equal(out(), '/cw/dir/x\n/cw/dir/x\n');
  });

  test('-n belongs to watch only', async () => {
    assert.equal((await qdb('read', '-n', '2', '/cli/a')).exitCode, 1);
  });

  test('-d NAME uses the domain database; --run-dir tells where', async (t) => {
    const named = await startQubesDB({ name: 'work' });
    t.after(() => named.stop());
    const w = await run(process.execPath, [CLI, 'write', '-d', 'work', '--run-dir', named.runDir, '/who', 'work'], { allowFailure: true });
    assert.equal(w.exitCode, 0, w.stderr);
    const r = await run(process.execPath, [CLI, 'read', '--run-dir', named.runDir, '-d', 'work', '/who'], { allowFailure: true });
    assert.equal(r.stdout, 'work\n');
  });

  test('no daemon: exit 1 with a message', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-cli-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const r = await run(process.execPath, [CLI, 'read', '--run-dir', dir, '/x'], { allowFailure: true });
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /Failed connect to local daemon/);
  });

  test('invoked as qubesdb-read through a symlink', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-cli-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const link = join(dir, 'qubesdb-read');
    symlinkSync(CLI, link);
    await qdb('write', '/cli/link', 'via symlink');
    const r = await run(process.execPath, [link, '--run-dir', daemon.runDir, '/cli/link'], { allowFailure: true });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'via symlink\n');
  });

  test('--help, -h, --version, unknown commands and options', async () => {
    for (const args of [['--help'], ['-h'], ['read', '--help']]) {
      const r = await run(process.execPath, [CLI, ...args], { allowFailure: true });
      assert.equal(r.exitCode, 0, args.join(' '));
      assert.match(r.stderr, /usage: qubes-net-qdb/);
    }
    const v = await run(process.execPath, [CLI, '--version'], { allowFailure: true });
    assert.match(v.stdout, /^qubes-net-qdb \d+\.\d+\.\d+\n$/);
    assert.equal((await run(process.execPath, [CLI, 'frobnicate'], { allowFailure: true })).exitCode, 1);
    assert.equal((await run(process.execPath, [CLI, 'read', '-Z', '/x'], { allowFailure: true })).exitCode, 1);
    assert.equal((await run(process.execPath, [CLI], { allowFailure: true })).exitCode, 1);
  });
});

test('qubes-net-qdb daemon runs the daemon', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-cli-daemon-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [CLI, 'daemon', '--run-dir', dir, '--ready-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const ready = collect(child.stdio[3] as Readable);
  const log = collect(child.stdout!);
  await waitFor('the daemon to be ready', () => ready().includes('ready') || (child.exitCode !== null ? Promise.reject(new Error(log())) : false));
  const w = await run(process.execPath, [CLI, 'write', '--run-dir', dir, '/from-cli-daemon', 'ok'], { allowFailure: true });
  assert.equal(w.exitCode, 0, w.stderr);
  const r = await run(process.execPath, [CLI, 'read', '--run-dir', dir, '/from-cli-daemon'], { allowFailure: true });
  assert.equal(r.stdout, 'ok\n');
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});

function collect(stream: Readable): () => string {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (s: string) => (text += s));
  return () => text;
}
