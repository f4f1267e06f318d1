// Issue 10.7 for the firewall: its QubesDB calls run off the event loop, so a QubesDB daemon
// that stops answering (here: SIGSTOP) leaves timers and other work running; the call
// completes once the daemon answers again. Errors keep their QubesDB shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openOffLoopQubesDB } from '@qubes-net/firewall';
import { QubesDBError } from '@qubes-net/qubesdb';
import { startQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';

test('a QubesDB daemon that stops answering does not freeze the firewall\'s event loop', async (t) => {
  const daemon = await startQubesDB();
  t.after(() => daemon.stop());
  const db = await openOffLoopQubesDB({ runDir: daemon.runDir });
  t.after(() => db.close());
  await db.write('/qubes-firewall/10.137.0.7/policy', 'drop');
  assert.equal(await db.read('/qubes-firewall/10.137.0.7/policy'), 'drop');
  assert.deepEqual([...(await db.multiread('/qubes-firewall/'))], [['/qubes-firewall/10.137.0.7/policy', 'drop']]);
  assert.deepEqual(await db.list('/qubes-firewall/'), ['/qubes-firewall/10.137.0.7/policy']);
  await assert.rejects(db.write('/bad path', 'x'), (e: unknown) => e instanceof QubesDBError && e.op === 'write');

  process.kill(daemon.pid, 'SIGSTOP');
  let resumed = false;
  t.after(() => {
    if (!resumed) process.kill(daemon.pid, 'SIGCONT');
  });
  let done = false;
  const stuck = db.read('/qubes-firewall/10.137.0.7/policy').then((v) => {
    done = true;
    return v;
  });
  // The loop keeps turning while the call waits: timers fire, and other work completes.
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  await waitFor('timers keep firing while QubesDB is stuck', () => ticks >= 10);
  clearInterval(timer);
  assert.equal(done, false, 'the call is still waiting for the stopped daemon');
  process.kill(daemon.pid, 'SIGCONT');
  resumed = true;
  assert.equal(await stuck, 'drop');
});
