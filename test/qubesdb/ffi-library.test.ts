// Which libqubesdb.so the FFI client loads: an explicit path, QUBESDB_LIBRARY, the system's,
// then ours; and that a copy loaded from elsewhere works the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLibrary, openQubesDB } from '@qubes-net/qubesdb';
import { startQubesDB } from '../helpers/qubesdb.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const OURS = join(repoRoot, 'native-bindings', 'build', 'libqubesdb.so');

function withEnv<T>(name: string, value: string | undefined, fn: () => T): T {
  const saved = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

test('library search order: explicit, QUBESDB_LIBRARY, then system or ours', () => {
  assert.deepEqual(findLibrary('/some/where/libqubesdb.so'), { path: '/some/where/libqubesdb.so', source: 'explicit' });
  withEnv('QUBESDB_LIBRARY', '/from/env/libqubesdb.so', () => {
    assert.deepEqual(findLibrary(), { path: '/from/env/libqubesdb.so', source: 'env' });
    assert.equal(findLibrary('/explicit.so').source, 'explicit');
  });
  withEnv('QUBESDB_LIBRARY', undefined, () => {
    const found = findLibrary(undefined, true);
    // With a run dir asked for, our build wins (the system's library ignores QUBESDB_RUN_DIR).
    assert.deepEqual(found, { path: OURS, source: 'own' });
  });
});

test('a copy of the library loaded by explicit path and through QUBESDB_LIBRARY works', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-lib-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const copy = join(dir, 'libqubesdb.so');
  copyFileSync(OURS, copy);
  const daemon = await startQubesDB();
  t.after(() => daemon.stop());

  const a = openQubesDB({ runDir: daemon.runDir, library: copy });
  t.after(() => a.close());
  assert.equal(a.library.path, copy);
  assert.equal(a.library.source, 'explicit');
  await a.write('/lib', 'copy');

  const b = withEnv('QUBESDB_LIBRARY', copy, () => openQubesDB({ runDir: daemon.runDir }));
  t.after(() => b.close());
  assert.equal(b.library.source, 'env');
  assert.equal(await b.read('/lib'), 'copy');
});

test('a library that cannot be loaded is a clear error', () => {
  assert.throws(() => openQubesDB({ library: '/nonexistent/libqubesdb.so', runDir: '/nonexistent' }), /libqubesdb|nonexistent/);
});
