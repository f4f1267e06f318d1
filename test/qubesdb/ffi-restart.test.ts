// The daemon restarting (or going away for a while) under a client that watches: the watch
// reconnects, registers its paths again, reports each watched path once, and keeps firing;
// the main handle reconnects on its next call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { openQubesDB, QubesDBError } from '@qubes-net/qubesdb';
import { startQubesDB } from '../helpers/qubesdb.js';
import { nextEvents } from './ffi-helpers.js';

test('a watch survives a daemon restart and still fires; writes after the restart work', async (t) => {
  const daemon = await startQubesDB();
  t.after(() => daemon.stop());
  const db = openQubesDB({ runDir: daemon.runDir });
  t.after(() => db.close());
  const w = db.watch(['/r', '/rd/']);
  t.after(() => w.close());
  const events = nextEvents(w);
  await db.write('/r', 'before');
  assert.deepEqual(await events.take(1), ['/r']);

  const oldPid = daemon.pid;
  await daemon.restart();
  assert.notEqual(daemon.pid, oldPid);
  // Changes may have been missed while disconnected: every watched path is reported once.
  assert.deepEqual((await events.take(2)).sort(), ['/r', '/rd/']);

  // The main handle's socket is dead: the write reconnects and goes through whole.
  await db.write('/r', 'after');
  assert.deepEqual(await events.take(1), ['/r']);
  assert.equal(await db.read('/r'), 'after');
  await db.write('/rd/x', '1');
  assert.deepEqual(await events.take(1), ['/rd/x']);
});

test('while the daemon is gone calls fail with EPIPE; everything resumes when it is back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdb-gone-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const runDir = join(dir, 'run');
  const first = await startQubesDB({ runDir });
  const db = openQubesDB({ runDir });
  t.after(() => db.close());
  const w = db.watch(['/back']);
  t.after(() => w.close());
  const events = nextEvents(w);
  await first.stop();

  await assert.rejects(db.read('/back'), (err: unknown) => err instanceof QubesDBError && err.errno === osConstants.errno.EPIPE);
  await assert.rejects(db.write('/back', 'x'), (err: unknown) => err instanceof QubesDBError && err.op === 'write');

  const second = await startQubesDB({ runDir });
  t.after(() => second.stop());
  assert.deepEqual(await events.take(1), ['/back']);
  await db.write('/back', 'again');
  assert.deepEqual(await events.take(1), ['/back']);
  assert.equal(await db.read('/back'), 'again');
});

test('closing a watch that is waiting to reconnect ends it', async (t) => {
  const daemon = await startQubesDB();
  const db = openQubesDB({ runDir: daemon.runDir });
  t.after(() => db.close());
  const w = db.watch(['/x']);
  const done = (async () => {
    const got: string[] = [];
    for await (const p of w) got.push(p);
    return got;
  })();
  await daemon.stop();
  await w.close();
  assert.deepEqual(await done, []);
});
