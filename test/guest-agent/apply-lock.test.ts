// The apply/remove lock across processes: a holder in another process makes a waiter wait or
// time out with a structured error naming it; a holder killed with SIGKILL leaves nothing stale
// (the kernel drops the abstract socket name); bad names are refused before any bind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { acquireApplyLock, ApplyLockError, APPLY_LOCK_WAIT_MS } from '@qubes-net/guest-agent';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const LOCK_MODULE = pathToFileURL(join(repoRoot, 'packages', 'guest-agent', 'dist', 'kernel', 'apply-lock.js')).href;

/** A process holding the lock `name` until its stdin closes; resolves once it holds it. */
async function holder(name: string): Promise<ChildProcess> {
  const script = `import(${JSON.stringify(LOCK_MODULE)}).then((m) => m.acquireApplyLock(5000, ${JSON.stringify(name)})).then((l) => {
    process.stdout.write('held\\n');
    process.stdin.on('end', () => { l.release(); process.exit(0); }).resume();
  }, (e) => { process.stderr.write(e.message); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [chunk] = await once(child.stdout!, 'data') as [Buffer];
  assert.equal(chunk.toString(), 'held\n');
  return child;
}

const lockName = (tag: string) => `qubes-net-guest-test-${tag}-${process.pid}`;

test('apply lock across processes: a waiter gets it once the other process releases it', async () => {
  const name = lockName('release');
  const child = await holder(name);
  // Held elsewhere: a short attempt fails and names the holder.
  const err = await acquireApplyLock(50, name).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ApplyLockError, String(err));
  assert.equal(err.code, 'ELOCKTIMEOUT');
  assert.equal(err.holderPid, child.pid);
  assert.match(err.message, new RegExp(`pid ${child.pid}`));
  // The waiter that is patient gets it when the holder lets go.
  const exited = once(child, 'exit');
  const waiting = acquireApplyLock(30_000, name);
  child.stdin!.end();
  const lock = await waiting;
  lock.release();
  await exited;
});

test('apply lock: a holder killed with SIGKILL leaves no stale lock', async () => {
  const name = lockName('kill');
  const child = await holder(name);
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
  const lock = await acquireApplyLock(30_000, name);
  lock.release();
});

test('apply lock: invalid names are refused; the wait stays below the uplink unit\'s 30 s start timeout', async () => {
  for (const bad of ['', 'a/b', 'eth0\n', 'x'.repeat(81), 'a\0b', '../uplink']) {
    await assert.rejects(acquireApplyLock(10, bad), (e: unknown) => e instanceof ApplyLockError && e.code === 'ELOCKNAME', JSON.stringify(bad));
  }
  assert.ok(APPLY_LOCK_WAIT_MS < 30_000);
});
