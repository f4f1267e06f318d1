// startQubesDB inside a qube: the daemon runs in the qube's network and mount namespace with
// the default run dir, so /var/run/qubes/qubesdb.sock inside the qube is its socket, and the
// host reaches the same socket through qube.hostPath('/run/qubes').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { NetnsSession } from '@qubes-net/netns';
import { MessageType } from '@qubes-net/qubesdb';
import { needRoot } from '../helpers/root.js';
import { startQubesDB } from '../helpers/qubesdb.js';
import { RawQdbClient } from '../helpers/raw-qdb.js';

test('a daemon started in a qube serves /var/run/qubes/qubesdb.sock inside it', async (t) => {
  if (!needRoot(t)) return;
  const session = await NetnsSession.create('qdb-daemon');
  t.after(() => session.destroy());
  const qube = await session.qube('work');
  const db = await startQubesDB({ qube });
  t.after(() => db.stop());
  assert.equal(db.socketPath, qube.hostPath('/run/qubes/qubesdb.sock'));
  // Inside the qube the socket is at upstream's default path.
  await qube.exec('test', ['-S', '/var/run/qubes/qubesdb.sock']);
  await qube.exec('test', ['-S', '/var/run/qubes/qubesdb.ro.sock']);
  const c = await RawQdbClient.connect(db.socketPath);
  t.after(() => c.close());
  assert.equal((await c.write('/qubes-ip', '10.137.0.7')).type, MessageType.RespOk);
  assert.equal(String(await c.read('/qubes-ip')), '10.137.0.7');
  // The daemon process really is in the qube's network namespace.
  const { stdout } = await qube.exec('readlink', ['/proc/self/ns/net']);
  assert.equal(readlinkSync(`/proc/${db.pid}/ns/net`), stdout.trim());
  assert.notEqual(readlinkSync('/proc/self/ns/net'), stdout.trim(), 'not the host namespace');
});
