// The control socket protocol between the CLI and the supervisor (a unix socket in a temp dir).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callControl, serveControl, LabNotRunning } from '@qubes-net/lab';

test('requests get progress lines and one reply; errors come back as errors', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'qnet-lab-ctl-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const sock = join(dir, 'control.sock');
  let ctl: Awaited<ReturnType<typeof serveControl>>;
  ctl = await serveControl(sock, async (req) => {
    if (req.op === 'boom') throw new Error('it broke');
    ctl.broadcast({ t: 1, step: 'working', qube: 'work' });
    return { echo: req.args };
  });
  t.after(() => ctl.close());
  const progress: string[] = [];
  assert.deepEqual(await callControl(sock, { op: 'echo', args: { a: 1 } }, (e) => progress.push(e.step)), { echo: { a: 1 } });
  assert.deepEqual(progress, ['working']);
  await assert.rejects(callControl(sock, { op: 'boom' }), /it broke/);
  // Garbage gets a clear error, and the server keeps serving.
  const reply = await new Promise<string>((resolve) => {
    const c = connect(sock);
    let buf = '';
    c.on('data', (d) => (buf += d));
    c.on('close', () => resolve(buf));
    c.write('not json\n');
  });
  assert.match(reply, /"ok":false.*bad request/);
  assert.deepEqual(await callControl(sock, { op: 'echo' }), {});
  await assert.rejects(callControl(join(dir, 'nothing.sock'), { op: 'ping' }), LabNotRunning);
});
