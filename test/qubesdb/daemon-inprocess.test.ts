// The QubesDBDaemon class used in-process (only async socket clients here, never the
// synchronous FFI client): options that the CLI does not expose, and the output cap that
// protects the daemon from a client that watches busy keys but never reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageType, QubesDBDaemon, encodeMessage } from '@qubes-net/qubesdb';
import { RawQdbClient } from '../helpers/raw-qdb.js';
import { waitFor } from '../helpers/wait.js';

function tempRunDir(t: { after(fn: () => void | Promise<void>): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdbin-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'run');
}

test('a client whose unread output passes the cap is dropped; writers and other clients go on', async (t) => {
  const daemon = new QubesDBDaemon({ runDir: tempRunDir(t), maxPendingOutput: 64 * 1024 });
  await daemon.start();
  t.after(() => daemon.stop());

  // A watcher that never reads: no 'data' listener, so its socket stays paused.
  const lazy = connect({ path: daemon.socketPath });
  t.after(() => void lazy.destroy());
  await new Promise<void>((resolve) => lazy.once('connect', () => resolve()));
  lazy.write(encodeMessage(MessageType.Watch, '/cap/'));
  const writer = await RawQdbClient.connect(daemon.socketPath);
  t.after(() => writer.close());
  await waitFor('the lazy watch registered', () => daemon.core.watches.size === 1);
  assert.equal(daemon.clientCount, 2);

  // 20,000 events of 72 bytes: well past kernel socket buffers plus 64 KiB.
  const n = 20_000;
  const one = encodeMessage(MessageType.Write, '/cap/k', Buffer.from('v'));
  writer.sendRaw(Buffer.concat(Array.from({ length: n }, () => one)));
  for (let i = 0; i < n; i++) assert.equal((await writer.nextReply()).type, MessageType.RespOk);
  await waitFor('the lazy client dropped', () => daemon.clientCount === 1);
  assert.equal(daemon.core.watches.size, 0, 'its watch went with it');
  assert.equal(String(await writer.read('/cap/k')), 'v');
});

test('stop() closes clients and removes only the socket files it created', async (t) => {
  const runDir = tempRunDir(t);
  const daemon = new QubesDBDaemon({ runDir, name: 'dom0' });
  await daemon.start();
  assert.equal(daemon.socketPath, join(runDir, 'qubesdb.dom0.sock'));
  const c = await RawQdbClient.connect(daemon.roSocketPath);
  await daemon.stop();
  await c.waitClosed();
  const again = new QubesDBDaemon({ runDir, name: 'dom0' });
  await again.start();
  // A second stop of the first daemon must not remove the new daemon's sockets.
  await daemon.stop();
  const d = await RawQdbClient.connect(again.socketPath);
  assert.equal(await d.read('/x'), undefined);
  await d.close();
  await again.stop();
});

test('invalid names and permissions are refused at construction', () => {
  assert.throws(() => new QubesDBDaemon({ name: '../x' }), /invalid daemon name/);
  assert.throws(() => new QubesDBDaemon({ rwSocketPerms: 0o1777 }), /invalid socket permissions/);
});
