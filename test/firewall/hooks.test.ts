// User hooks: executable regular files only, sorted, /etc before /rw, the user script last,
// the /rw ones skipped with custom-persist; a failing hook does not stop the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, readFile, rm, symlink, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@qubes-net/common';
import { runHooks, listHooks, type HookPaths } from '@qubes-net/firewall';

async function fixture(t: import('node:test').TestContext): Promise<{ paths: HookPaths; out: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'qn-fw-hooks-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const paths: HookPaths = { etcDir: join(dir, 'etc'), rwDir: join(dir, 'rw'), userScript: join(dir, 'user-script') };
  const out = join(dir, 'out');
  await mkdir(paths.etcDir);
  await mkdir(paths.rwDir);
  const script = (name: string) => `#!/bin/sh\necho ${name} >> ${out}\n`;
  await writeFile(join(paths.etcDir, '20-b'), script('etc-20-b'), { mode: 0o755 });
  await writeFile(join(paths.etcDir, '10-a'), script('etc-10-a'), { mode: 0o755 });
  await writeFile(join(paths.etcDir, '15-not-exec'), script('etc-15-not-exec'), { mode: 0o644 });
  await mkdir(join(paths.etcDir, '12-dir'));
  await writeFile(join(paths.etcDir, '30-fails'), '#!/bin/sh\nexit 3\n', { mode: 0o755 });
  await writeFile(join(paths.rwDir, 'a'), script('rw-a'), { mode: 0o755 });
  await symlink(join(paths.etcDir, '10-a'), join(paths.rwDir, 'b-link'));
  await writeFile(paths.userScript, script('user-script'), { mode: 0o755 });
  await chmod(paths.userScript, 0o755);
  return { paths, out };
}

test('hooks run once each, in order, executable regular files only', async (t) => {
  const { paths, out } = await fixture(t);
  const results = await runHooks(paths, false, silentLogger());
  assert.deepEqual((await readFile(out, 'utf8')).trim().split('\n'), ['etc-10-a', 'etc-20-b', 'rw-a', 'etc-10-a', 'user-script']);
  assert.deepEqual(results.map((r) => r.exitCode), [0, 0, 3, 0, 0, 0]);
});

test('custom-persist skips /rw/config hooks and the user script', async (t) => {
  const { paths, out } = await fixture(t);
  assert.deepEqual((await listHooks(paths, true)).map((p) => p.slice(p.lastIndexOf('/') + 1)), ['10-a', '20-b', '30-fails']);
  await runHooks(paths, true, silentLogger());
  assert.deepEqual((await readFile(out, 'utf8')).trim().split('\n'), ['etc-10-a', 'etc-20-b']);
});

test('missing hook directories are not an error', async () => {
  assert.deepEqual(await listHooks({ etcDir: '/nonexistent/qn-a', rwDir: '/nonexistent/qn-b', userScript: '/nonexistent/qn-c' }, false), []);
});

test('a hook that hangs is killed with what it started after --hook-wait-ms; the next one runs', async (t) => {
  const { paths, out } = await fixture(t);
  const pidFile = `${out}.pid`;
  // Sorted between 20-b and 30-fails: a child in the background and a wait that never ends.
  await writeFile(join(paths.etcDir, '25-hangs'), `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\nwait\n`, { mode: 0o755 });
  const results = await runHooks(paths, true, silentLogger(), 300);
  assert.deepEqual(results.map((r) => [r.path.slice(r.path.lastIndexOf('/') + 1), r.exitCode, r.timedOut ?? false]), [
    ['10-a', 0, false], ['20-b', 0, false], ['25-hangs', -1, true], ['30-fails', 3, false],
  ]);
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  assert.ok(stat === '' || /^\d+ \(.*\) [ZX]/.test(stat), 'the hook\'s background child was killed too');
});

test('a hook that starts a daemon in the background returns when the hook exits', async (t) => {
  const { paths, out } = await fixture(t);
  const pidFile = `${out}.daemon`;
  // The daemon keeps the hook's stdout and stderr open; the hook itself exits at once.
  await writeFile(join(paths.etcDir, '25-daemon'), `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\n`, { mode: 0o755 });
  const results = await runHooks(paths, true, silentLogger(), 60_000);
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  t.after(() => process.kill(pid, 'SIGKILL'));
  assert.deepEqual(results.map((r) => r.exitCode), [0, 0, 0, 3]);
  assert.ok(results.every((r) => !r.timedOut));
});
