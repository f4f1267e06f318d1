// The control server's HangUp (13.3): a handler that must not answer (the agent was stopped
// while starting) closes the connection without a reply, which clients take as "retry with the
// next instance"; every other error is answered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ControlServer, HangUp, controlRequest, reply } from '@qubes-net/common/control';

async function withServer(handle: ConstructorParameters<typeof ControlServer>[0]['handle'], fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qnet-hangup-'));
  const path = join(dir, 'agent.sock');
  const server = new ControlServer({ path, log: pino({ level: 'silent' }), handle });
  await server.listen();
  try {
    await fn(path);
  } finally {
    await server.stopAccepting({ unlink: true });
    await rm(dir, { recursive: true, force: true });
  }
}

test('a handler throwing HangUp: the connection closes without a reply', async () => {
  await withServer(async () => {
    throw new HangUp('stopped while starting');
  }, async (path) => {
    const r = await controlRequest(path, { op: 'online', vif: 'vif3.0', ips: ['10.137.0.7'], mac: '00:16:3e:5e:6c:00', xenbusPath: '/local/domain/2/backend/vif/3/0' });
    assert.equal(r.code, 'stopping', JSON.stringify(r));
    assert.match(r.message, /closed the connection without a reply/);
  });
});

test('any other handler error is still answered (code internal)', async () => {
  await withServer(async () => {
    throw new Error('boom');
  }, async (path) => {
    const r = await controlRequest(path, { op: 'sync', reason: 'test' });
    assert.equal(r.code, 'internal');
    assert.equal(r.message, 'boom');
  });
  await withServer(async () => reply('ok', 'fine'), async (path) => {
    assert.equal((await controlRequest(path, { op: 'sync', reason: 'test' })).code, 'ok');
  });
});
