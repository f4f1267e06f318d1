// The daemon inside a qube of the netns kit, at upstream's default path /var/run/qubes: a
// client inside the qube finds it with no configuration (qdb_open(NULL)), and a client on
// the host reaches the same database through the qube's run directory (QUBESDB_RUN_DIR).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetnsSession } from '@qubes-net/netns';
import { openQubesDB } from '@qubes-net/qubesdb';
import { needRoot } from '../helpers/root.js';
import { startQubesDB } from '../helpers/qubesdb.js';
import { waitFor } from '../helpers/wait.js';
import { nextEvents } from './ffi-helpers.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(repoRoot, 'packages', 'qubesdb', 'dist', 'cli.js');

test('daemon in a qube: clients inside (default socket path) and outside (run dir) share it', async (t) => {
  if (!needRoot(t)) return;
  const session = await NetnsSession.create('qdb-ffi');
  t.after(() => session.destroy());
  const qube = await session.qube('work');
  const daemon = await startQubesDB({ qube });
  t.after(() => daemon.stop());

  // Inside the qube, no QUBESDB_RUN_DIR: the library's default /var/run/qubes/qubesdb.sock.
  const inQube = (...args: string[]) => qube.exec(process.execPath, [CLI, ...args], { allowFailure: true, env: { QUBESDB_RUN_DIR: '' } });
  const w = await inQube('write', '/qubes-ip', '10.137.0.7', '/qubes-gateway', '10.137.0.1');
  assert.equal(w.exitCode, 0, w.stderr);

  // The host reads what the qube wrote, through the qube's run dir.
  const host = openQubesDB({ runDir: daemon.runDir });
  t.after(() => host.close());
  assert.deepEqual(
    [...(await host.multiread('/qubes-'))],
    [['/qubes-gateway', '10.137.0.1'], ['/qubes-ip', '10.137.0.7']],
  );

  // A host-side watch sees a write made inside the qube …
  const watch = host.watch(['/qubes-uplink-status']);
  t.after(() => watch.close());
  const events = nextEvents(watch);
  assert.equal((await inQube('write', '/qubes-uplink-status', '1 ok')).exitCode, 0);
  assert.deepEqual(await events.take(1), ['/qubes-uplink-status']);

  // … and a watch inside the qube sees a write from the host.
  const watcher = qube.spawn(process.execPath, [CLI, 'watch', '-n', '1', '/from-host'], { env: { QUBESDB_RUN_DIR: '' } });
  const exited = new Promise<number | null>((resolve) => watcher.once('exit', (code) => resolve(code)));
  let done = false;
  void exited.then(() => (done = true));
  await waitFor('the watcher in the qube to see a host write', async () => {
    if (done) return true;
    await host.write('/from-host', 'hello');
    return false;
  });
  assert.equal(await exited, 0, qube.outputOf(watcher).stderr);
  assert.equal(qube.outputOf(watcher).stdout, '/from-host\n');
  const r = await inQube('read', '/from-host');
  assert.equal(r.stdout, 'hello\n');
});
