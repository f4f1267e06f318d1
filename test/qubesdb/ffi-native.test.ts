// Runs the C conformance program (native-bindings/test/qdb-conformance.c) against our daemon:
// the libqubesdb ABI used directly, including the behaviours that go beyond upstream
// (re-registered watches and a whole resent WRITE after the daemon restarts, FIFO event
// queue, no SIGPIPE, read-only fallback).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startQubesDB } from '../helpers/qubesdb.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const nativeDir = join(repoRoot, 'native-bindings');
const library = join(nativeDir, 'build', 'libqubesdb.so');

test('libqubesdb ABI conformance (C program against the daemon, with a restart)', async (t) => {
  assert.ok(existsSync(library), `${library} missing: run make -C native-bindings first`);
  const work = mkdtempSync(join(tmpdir(), 'qnet-qdb-c-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const exe = join(work, 'qdb-conformance');
  const cc = spawnSync(process.env.CC ?? 'cc', [
    '-O1', '-g', '-Wall', '-Wextra', '-Werror', '-D_GNU_SOURCE',
    '-I', join(nativeDir, 'include'),
    '-o', exe, join(nativeDir, 'test', 'qdb-conformance.c'),
    '-L', join(nativeDir, 'build'), '-lqubesdb', `-Wl,-rpath,${join(nativeDir, 'build')}`,
  ], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `compiling the C test failed:\n${cc.stderr}`);

  const db = await startQubesDB();
  t.after(() => db.stop());
  const child = spawn(exe, [], { env: { ...process.env, QUBESDB_RUN_DIR: db.runDir }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const lines: string[] = [];
  let restarts = 0;
  for await (const line of createInterface({ input: child.stdout })) {
    lines.push(line);
    if (line === 'RESTART') {
      await db.restart();
      restarts++;
      child.stdin.write('go\n');
    }
  }
  const { code, signal } = await exited;
  const failed = lines.filter((l) => l.startsWith('not ok'));
  assert.deepEqual(failed, [], `failed checks:\n${failed.join('\n')}\n${stderr}\ndaemon log:\n${db.log()}`);
  assert.equal(signal, null, `the C test died of ${signal} (SIGPIPE would mean the library raised it)`);
  assert.equal(code, 0, lines.join('\n'));
  assert.equal(restarts, 1);
  assert.ok(lines.includes('PASSED'));
  assert.ok(lines.filter((l) => l.startsWith('ok - ')).length >= 70, `too few checks ran:\n${lines.join('\n')}`);
});
