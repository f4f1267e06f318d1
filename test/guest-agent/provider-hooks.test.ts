// The guest's ip-change hooks (/rw/config/qubes-ip-change-hook) are run like the agent's hooks:
// done when the hook exits, even when a daemon it started keeps its output pipes open.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as ProviderHooks from '../../packages/guest-agent/dist/kernel/provider-hooks.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// The test's own timeout is a hang guard: a runner that waited for the pipes would wait for the
// daemon's 300 s.
test('an ip-change hook that starts a daemon in the background returns at once; a missing hook is skipped', { timeout: 60_000 }, async () => {
  const { runIpChangeHooks } = (await import(join(ROOT, 'packages/guest-agent/dist/kernel/provider-hooks.js'))) as typeof ProviderHooks;
  const dir = await mkdtemp(join(tmpdir(), 'qn-ipchange-'));
  try {
    const hook = join(dir, 'qubes-ip-change-hook');
    const pidFile = join(dir, 'daemon.pid');
    await writeFile(hook, `#!/bin/sh\nsleep 300 &\necho $! > ${pidFile}\necho oops >&2\nexit 2\n`);
    await chmod(hook, 0o755);
    const runs = await runIpChangeHooks([hook, join(dir, 'qubes_ip_change_hook')], 120_000);
    assert.deepEqual(runs, [{ path: hook, code: 2, stderr: 'oops' }]);
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
