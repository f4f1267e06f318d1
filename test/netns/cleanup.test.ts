// Sessions of processes that end without calling destroy(): the exit handlers clean up after
// a signal; cleanupStale() removes what a SIGKILLed process left, and never a live session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join, dirname } from 'node:path';
import { NetnsSession, cleanupStale } from '@qubes-net/netns';
import { needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { leftovers } from './helpers.js';

const childScript = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'session-child.js');

async function startChild(mode = 'wait'): Promise<{ child: ChildProcess; id: string }> {
  const child = spawn(process.execPath, [childScript, mode], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const line = await waitFor('child session ready', () => (out.includes('\n') ? out.split('\n')[0] : undefined));
  return { child, id: JSON.parse(line!).id as string };
}

function exitOf(child: ChildProcess): Promise<unknown> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', r));
}

test('a session of a process killed by SIGTERM is cleaned up by its exit handler', async (t) => {
  if (!needRoot(t)) return;
  const { child, id } = await startChild();
  t.after(() => cleanupStale());
  assert.ok(leftovers(id).length > 0);
  const exited = exitOf(child);
  child.kill('SIGTERM');
  await exited;
  assert.equal(child.signalCode, 'SIGTERM', 'the process still dies of the signal');
  assert.deepEqual(leftovers(id), []);
});

for (const mode of ['throw', 'exit']) {
  test(`a session of a process that ends by ${mode === 'throw' ? 'an uncaught error' : 'process.exit'} is cleaned up`, async (t) => {
    if (!needRoot(t)) return;
    const { child, id } = await startChild(mode);
    t.after(() => cleanupStale());
    await exitOf(child);
    assert.equal(child.exitCode, mode === 'throw' ? 1 : 3);
    assert.deepEqual(leftovers(id), []);
  });
}

test('cleanupStale removes what a SIGKILLed session left, and leaves live sessions alone', async (t) => {
  if (!needRoot(t)) return;
  const mine = await NetnsSession.create('live');
  t.after(() => mine.destroy());
  await mine.qube('q');
  const { child, id } = await startChild();
  const exited = exitOf(child);
  child.kill('SIGKILL');
  await exited;
  assert.ok(leftovers(id).length > 0, 'SIGKILL leaves things behind');
  const removed = await cleanupStale();
  assert.ok(removed.includes(id));
  assert.ok(!removed.includes(mine.id));
  assert.deepEqual(leftovers(id), []);
  assert.ok(leftovers(mine.id).length > 0, 'the live session is untouched');
  assert.ok(await mine.getQube('q')!.exec('true', []));
});
