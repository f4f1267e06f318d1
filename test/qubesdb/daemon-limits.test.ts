// The daemon's limits against a local process denying QubesDB to the others (issue 13.4):
// read-write slots no read-only client can take, idle and partial-message timeouts (a client
// with watches is a subscriber, not idle), a per-client watch cap answered with RESP_ERROR,
// and a global budget of unread output that sheds the oldest backlog. Each test reproduces the
// attack and fails without its limit. The daemon runs in-process (only async socket clients).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { MessageType, QubesDBDaemon, encodeMessage, openQubesDB, type DaemonOptions } from '@qubes-net/qubesdb';
import { DAEMON_BIN } from '../helpers/qubesdb.js';
import { RawQdbClient } from '../helpers/raw-qdb.js';
import { waitFor } from '../helpers/wait.js';

const { Read, Write, Watch, RespOk, RespError } = MessageType;

interface LogLine {
  level: string;
  fields: Record<string, unknown>;
  msg: string;
}

async function startDaemon(t: { after(fn: () => void | Promise<void>): void }, limits: DaemonOptions['limits'] = {}): Promise<{ daemon: QubesDBDaemon; logs: LogLine[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdblim-'));
  const logs: LogLine[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void logs.push({ level, fields, msg });
  const logger = { debug: () => {}, info: at('info'), warn: at('warn'), error: at('error') } as unknown as NonNullable<DaemonOptions['logger']>;
  const daemon = new QubesDBDaemon({ runDir: join(dir, 'run'), limits, logger });
  await daemon.start();
  t.after(async () => {
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { daemon, logs };
}

function closeAll(t: { after(fn: () => void | Promise<void>): void }, clients: RawQdbClient[]): void {
  t.after(() => Promise.all(clients.map((c) => c.close())).then(() => undefined));
}

test('defaults: 256 clients with 32 kept for the read-write socket, 4096 watches, 60 s idle, 10 s partial, 64 MiB output', async (t) => {
  const { daemon } = await startDaemon(t);
  assert.deepEqual(daemon.limits, {
    maxClients: 256, rwReservedSlots: 32, maxWatchesPerClient: 4096, maxReadOnlyWatches: 65536, idleTimeoutMs: 60_000, partialTimeoutMs: 10_000,
    maxClientOutput: 32 * 1024 * 1024, maxTotalOutput: 64 * 1024 * 1024,
  });
  assert.throws(() => new QubesDBDaemon({ limits: { maxClients: 8, rwReservedSlots: 8 } }), /rwReservedSlots/);
  assert.throws(() => new QubesDBDaemon({ limits: { idleTimeoutMs: -1 } }), /invalid limit/);
  assert.equal(new QubesDBDaemon({ limits: { maxClients: 16 } }).limits.rwReservedSlots, 2, 'reserve scales with a small limit');
});

test('256 idle read-only connections cannot lock out an agent on the read-write socket', async (t) => {
  // Timeouts off: this is the slot reserve alone.
  const { daemon, logs } = await startDaemon(t, { idleTimeoutMs: 0, partialTimeoutMs: 0 });
  const idle: RawQdbClient[] = [];
  closeAll(t, idle);
  for (let i = 0; i < 256; i++) idle.push(await RawQdbClient.connect(daemon.roSocketPath));
  await waitFor('the read-only connections past 224 closed', () => idle.filter((c) => c.isClosed).length === 32);
  assert.equal(daemon.clientCount, 224);
  assert.ok(logs.some((l) => l.msg.includes('too many clients')), 'refusal logged');

  const agent = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [agent]);
  assert.equal((await agent.write('/qubes-ip', '10.137.0.5')).type, RespOk);
  assert.equal(String(await agent.read('/qubes-ip')), '10.137.0.5');
  assert.equal((await agent.watch('/qubes-ip')).type, RespOk);
  // Still served by the idle ones that got in: the reserve limits, it does not punish.
  assert.equal(String(await idle[0]!.read('/qubes-ip')), '10.137.0.5');
});

test('idle clients are closed after the idle timeout; subscribers and active clients are kept', async (t) => {
  const { daemon, logs } = await startDaemon(t, { idleTimeoutMs: 300, partialTimeoutMs: 0 });
  const idle = await RawQdbClient.connect(daemon.roSocketPath);
  const usedOnce = await RawQdbClient.connect(daemon.socketPath);
  const subscriber = await RawQdbClient.connect(daemon.roSocketPath);
  const writer = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [idle, usedOnce, subscriber, writer]);
  assert.equal(await usedOnce.read('/none'), undefined);
  assert.equal((await subscriber.watch('/sub/')).type, RespOk);
  // The writer stays active while the others sit: one request every 50 ms.
  let stop = false;
  const active = (async () => {
    let i = 0;
    while (!stop) {
      assert.equal((await writer.write(`/other/${i++ % 4}`, 'x')).type, RespOk);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  await waitFor('the idle clients closed', () => idle.isClosed && usedOnce.isClosed);
  stop = true;
  await active;
  assert.equal(subscriber.isClosed, false, 'a client with a watch is a subscriber, not idle');
  assert.equal(writer.isClosed, false, 'an active client is not idle');
  assert.equal((await writer.write('/sub/k', 'v')).type, RespOk);
  assert.equal(await subscriber.nextEvent(), '/sub/k');
  assert.equal(logs.filter((l) => l.msg.includes('idle client')).length, 2);
});

test('a client leaving a message incomplete is closed after the partial timeout, watches or not', async (t) => {
  const { daemon, logs } = await startDaemon(t, { idleTimeoutMs: 0, partialTimeoutMs: 300 });
  const halfHeader = await RawQdbClient.connect(daemon.roSocketPath);
  const halfPayload = await RawQdbClient.connect(daemon.socketPath);
  const subscriberHalf = await RawQdbClient.connect(daemon.roSocketPath);
  const trickle = await RawQdbClient.connect(daemon.socketPath);
  const quiet = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [halfHeader, halfPayload, subscriberHalf, trickle, quiet]);
  assert.equal((await subscriberHalf.watch('/x')).type, RespOk);
  halfHeader.sendRaw(encodeMessage(Read, '/x').subarray(0, 36));
  halfPayload.sendRaw(encodeMessage(Write, '/x', Buffer.from('0123456789')).subarray(0, 75));
  subscriberHalf.sendRaw(encodeMessage(Read, '/x').subarray(0, 10));
  // More bytes of the same message do not restart the clock.
  const slow = encodeMessage(Read, '/x');
  let sent = 0;
  const dribble = setInterval(() => {
    if (sent < slow.length - 1 && !trickle.isClosed) trickle.sendRaw(slow.subarray(sent, ++sent));
  }, 20);
  t.after(() => clearInterval(dribble));
  await waitFor('the incomplete clients closed', () => halfHeader.isClosed && halfPayload.isClosed && subscriberHalf.isClosed && trickle.isClosed);
  clearInterval(dribble);
  assert.equal(quiet.isClosed, false, 'a client with nothing half-sent is not timed out (idle timeout off)');
  assert.equal(await quiet.read('/x'), undefined, 'the incomplete WRITE stored nothing');
  assert.equal(logs.filter((l) => l.msg.includes('incomplete message')).length, 4);
});

test('per-client watch cap: WATCH past it gets RESP_ERROR, the client and the others go on', async (t) => {
  const { daemon, logs } = await startDaemon(t, { maxWatchesPerClient: 50 });
  const greedy = await RawQdbClient.connect(daemon.roSocketPath);
  const other = await RawQdbClient.connect(daemon.roSocketPath);
  const writer = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [greedy, other, writer]);
  // Pipelined, as a flood would send them: 50 accepted, the rest refused, in order.
  greedy.sendRaw(Buffer.concat(Array.from({ length: 80 }, (_, i) => encodeMessage(Watch, `/w/${i}`))));
  const replies = [];
  for (let i = 0; i < 80; i++) replies.push((await greedy.nextReply()).type);
  assert.deepEqual(replies, [...Array(50).fill(RespOk), ...Array(30).fill(RespError)]);
  assert.equal(greedy.isClosed, false);
  assert.equal(daemon.core.watches.size, 50);
  assert.equal(logs.filter((l) => l.msg.includes('watch limit')).length, 1, 'logged once per client');
  // An UNWATCH frees a registration; the cap is per client.
  assert.equal((await greedy.unwatch('/w/0')).type, RespOk);
  assert.equal((await greedy.watch('/w/new')).type, RespOk);
  assert.equal((await greedy.watch('/w/over')).type, RespError);
  assert.equal((await other.watch('/w/1')).type, RespOk);
  assert.equal((await writer.write('/w/1', 'v')).type, RespOk);
  assert.equal(await greedy.nextEvent(), '/w/1');
  assert.equal(await other.nextEvent(), '/w/1');
  await greedy.close();
  await waitFor('the greedy client’s watches gone', () => daemon.core.watches.size === 1);
});

test('read-only clients together cannot register more than their budget; read-write clients are not counted', async (t) => {
  const { daemon } = await startDaemon(t, { maxWatchesPerClient: 40, maxReadOnlyWatches: 100 });
  const ro = await Promise.all(Array.from({ length: 3 }, () => RawQdbClient.connect(daemon.roSocketPath)));
  const agent = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [...ro, agent]);
  const ok: number[] = [];
  for (const c of ro) {
    let n = 0;
    for (let i = 0; i < 40; i++) if ((await c.watch(`/ro/${i}`)).type === RespOk) n++;
    ok.push(n);
  }
  assert.deepEqual(ok, [40, 40, 20]);
  for (let i = 0; i < 40; i++) assert.equal((await agent.watch(`/rw/${i}`)).type, RespOk, 'the agent still registers');
  // Freed on UNWATCH and on disconnect.
  assert.equal((await ro[0]!.unwatch('/ro/0')).type, RespOk);
  assert.equal((await ro[2]!.watch('/ro/x')).type, RespOk);
  assert.equal((await ro[2]!.watch('/ro/y')).type, RespError);
  await ro[1]!.close();
  await waitFor('the closed client’s registrations freed', async () => (await ro[2]!.watch('/ro/z')).type === RespOk);
});

test('global output budget: slow readers are shed oldest backlog first; a reading watcher is kept', async (t) => {
  const budget = 2 * 1024 * 1024;
  const { daemon, logs } = await startDaemon(t, { maxTotalOutput: budget, maxClientOutput: 32 * 1024 * 1024 });
  const older = await RawQdbClient.connect(daemon.roSocketPath);
  const newer = await RawQdbClient.connect(daemon.roSocketPath);
  const reader = await RawQdbClient.connect(daemon.roSocketPath);
  const writer = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [older, newer, reader, writer]);
  // 50 registrations each: every write queues 3,600 bytes per lazy client.
  for (let i = 0; i < 50; i++) {
    assert.equal((await older.watch('/ob/a')).type, RespOk);
    assert.equal((await newer.watch('/ob/b')).type, RespOk);
  }
  assert.equal((await reader.watch('/ob/')).type, RespOk);
  const socketOf = (c: RawQdbClient): { pause(): void; resume(): void } => (c as unknown as { socket: { pause(): void; resume(): void } }).socket;
  for (const c of [older, newer]) socketOf(c).pause();
  // A paused client does not see its connection close, so shedding is read from the log
  // (client ids follow connection order: older 1, newer 2).
  const shed: LogLine[] = [];
  const shedNow = (): LogLine[] => logs.filter((l) => l.msg.includes('output budget'));
  // ~720 KB to the older one: past the kernel's socket buffers, well under the budget.
  for (let i = 0; i < 200; i++) assert.equal((await writer.write('/ob/a', 'x')).type, RespOk);
  assert.deepEqual(shedNow(), [], 'under the budget nobody is shed');
  // Now only the newer one's backlog grows, until the sum passes the budget.
  let bWrites = 0;
  for (; bWrites < 3000 && shedNow().length === 0; bWrites++) assert.equal((await writer.write('/ob/b', 'x')).type, RespOk);
  shed.push(...shedNow());
  assert.equal(shed.length, 1, 'one client shed');
  assert.equal(shed[0]!.fields.client, 1, 'the oldest backlog goes first');
  assert.ok((shed[0]!.fields.totalPending as number) > budget);
  socketOf(older).resume();
  await older.waitClosed();
  assert.equal(reader.isClosed, false);
  assert.equal((await writer.write('/ob/c', 'y')).type, RespOk);
  await waitFor('the reader got every event', () => reader.events.includes('/ob/c'));
  assert.equal(reader.events.length, 200 + bWrites + 1, 'the reading watcher lost nothing');
  socketOf(newer).resume();
  await waitFor('the newer one read its whole backlog', () => newer.events.length === 50 * bWrites);
  assert.equal(newer.isClosed, false, 'the newer one is kept: the sum was under the budget again');
  assert.equal(shed[0]!.fields.budget, budget);
});

test('our libqubesdb rides over the idle timeout: its idle request connection reconnects, its watch connection is kept', async (t) => {
  // A separate daemon process: the FFI client's calls block a thread on the daemon's answers.
  const dir = mkdtempSync(join(tmpdir(), 'qnet-qdblim-ffi-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [DAEMON_BIN, '--run-dir', join(dir, 'run'), '--idle-timeout-ms', '200', '--ready-fd', '3'], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
  t.after(() => void child.kill('SIGTERM'));
  let log = '';
  child.stdout!.on('data', (b: Buffer) => (log += b.toString()));
  await new Promise<void>((resolve, reject) => {
    (child.stdio[3] as Readable).once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`daemon exited ${code}: ${log}`)));
  });
  const db = openQubesDB({ runDir: join(dir, 'run') });
  t.after(() => db.close());
  const w = db.watch(['/ffi/k']);
  t.after(() => w.close());
  await db.write('/ffi/k', 'one');
  await waitFor('the idle request connection closed by the daemon', () => log.includes('idle client past the timeout'));
  assert.equal(await db.read('/ffi/k'), 'one', 'the next call reconnects');
  await db.write('/ffi/k', 'two');
  const events: string[] = [];
  for await (const e of w) {
    events.push(e);
    if (events.length === 2) break;
  }
  assert.deepEqual(events, ['/ffi/k', '/ffi/k'], 'both writes seen by the watch');
  assert.equal(log.match(/idle client past the timeout/g)!.length, 1, 'only the request connection was idle');
});

test('global output budget: a read-write client (an agent) is shed only after the read-only ones', async (t) => {
  const budget = 2 * 1024 * 1024;
  const { daemon, logs } = await startDaemon(t, { maxTotalOutput: budget });
  const agent = await RawQdbClient.connect(daemon.socketPath);
  const flooder = await RawQdbClient.connect(daemon.roSocketPath);
  const writer = await RawQdbClient.connect(daemon.socketPath);
  closeAll(t, [agent, flooder, writer]);
  for (let i = 0; i < 50; i++) {
    assert.equal((await agent.watch('/ob/a')).type, RespOk);
    assert.equal((await flooder.watch('/ob/b')).type, RespOk);
  }
  const socketOf = (c: RawQdbClient): { pause(): void; resume(): void } => (c as unknown as { socket: { pause(): void; resume(): void } }).socket;
  for (const c of [agent, flooder]) socketOf(c).pause();
  const shedNow = (): LogLine[] => logs.filter((l) => l.msg.includes('output budget'));
  // The agent's backlog is the older one, yet the read-only flooder goes first.
  for (let i = 0; i < 200; i++) assert.equal((await writer.write('/ob/a', 'x')).type, RespOk);
  for (let i = 0; i < 3000 && shedNow().length === 0; i++) assert.equal((await writer.write('/ob/b', 'x')).type, RespOk);
  assert.equal(shedNow().length, 1);
  assert.equal(shedNow()[0]!.fields.client, 2, 'the read-only flooder (client 2) is shed, not the agent (client 1)');
  assert.equal(shedNow()[0]!.fields.readOnly, true);
  socketOf(agent).resume();
  await waitFor('the agent read its whole backlog', () => agent.events.length === 50 * 200);
  assert.equal(agent.isClosed, false);
});
