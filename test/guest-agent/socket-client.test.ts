// The one-shot paths' pieces without FFI or pino: the pure-JS QubesDB socket client against the
// real daemon (same answers as the FFI client), and the line logger's output shape.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openQubesDB, type QubesDB } from '@qubes-net/qubesdb';
import { openSocketQubesDB, type SocketQubesDB } from '@qubes-net/qubesdb/socket-client';
import { createLineLogger } from '@qubes-net/common/line-log';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';

let qdb: RunningQubesDB;
let ffi: QubesDB;

before(async () => {
  qdb = await startQubesDB();
  ffi = openQubesDB({ runDir: qdb.runDir });
});
after(async () => {
  await ffi?.close().catch(() => undefined);
  await qdb?.stop().catch(() => undefined);
});

test('socket client: read, write, rm, list, multiread give what the FFI client gives', async () => {
  const db = await openSocketQubesDB({ runDir: qdb.runDir });
  try {
    await db.write('/sc/a', '1');
    await db.write('/sc/b/c', 'ü, spaces and = signs');
    await ffi.write('/sc/z', '');
    assert.equal(await db.read('/sc/a'), '1');
    assert.equal(await db.read('/sc/b/c'), 'ü, spaces and = signs');
    assert.equal(await db.read('/sc/z'), '');
    assert.equal(await db.read('/sc/missing'), undefined);
    assert.deepEqual(await db.list('/sc/'), await ffi.list('/sc/'));
    assert.deepEqual([...await db.multiread('/sc/')], [...await ffi.multiread('/sc/')]);
    // Requests issued together are answered in order.
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => db.write(`/sc/n${i}`, String(i)).then(() => db.read(`/sc/n${i}`))));
    assert.deepEqual(many, Array.from({ length: 50 }, (_, i) => String(i)));
    await db.rm('/sc/');
    await db.rm('/sc/never');
    assert.deepEqual(await ffi.list('/sc/'), []);
  } finally {
    await db.close();
  }
});

test('socket client: bad paths and values are refused before sending; the connection stays usable', async () => {
  const db = await openSocketQubesDB({ runDir: qdb.runDir });
  try {
    for (const p of ['no-slash', '/a b', '/' + 'x'.repeat(64), '/dir/']) await assert.rejects(db.read(p), { name: 'QubesDBError' });
    await assert.rejects(db.write('/sc2', 'a\0b'), { name: 'QubesDBError' });
    await assert.rejects(db.write('/sc2', 'x'.repeat(3072)), { name: 'QubesDBError' });
    await db.write('/sc2', 'x'.repeat(3071));
    assert.equal((await db.read('/sc2'))?.length, 3071);
  } finally {
    await db.close();
  }
});

test('socket client: watch events arrive between replies; no daemon is a QubesDBError', async () => {
  const db: SocketQubesDB = await openSocketQubesDB({ runDir: qdb.runDir });
  const w = db.watch(['/sc3/']);
  await db.read('/sc3/x'); // the watch is registered once a later request is answered
  await ffi.write('/sc3/x', '1');
  const it = w[Symbol.asyncIterator]();
  assert.deepEqual(await it.next(), { value: '/sc3/x', done: false });
  await w.close();
  await db.close();
  await assert.rejects(openSocketQubesDB({ runDir: '/nonexistent-qubes-net' }), /qubesdb not reachable/);
});

test('line logger: pino\'s line shape, child fields, level filter, journald priority prefix', () => {
  const lines: string[] = [];
  const saved = process.env.QUBES_NET_LOG_LEVEL;
  delete process.env.QUBES_NET_LOG_LEVEL;
  try {
    const log = createLineLogger('guest-agent', { write: (l) => lines.push(l), journal: false });
    log.child({ qube: 'work' }).info({ ifname: 'eth0', n: 1n, err: new Error('boom') }, 'uplink configured');
    log.debug({}, 'hidden');
    const o = JSON.parse(lines[0]!);
    assert.deepEqual(Object.keys(o), ['level', 'time', 'pid', 'component', 'qube', 'ifname', 'n', 'err', 'msg']);
    assert.equal(o.level, 30);
    assert.equal(o.msg, 'uplink configured');
    assert.equal(o.n, '1');
    assert.equal(o.err, 'boom');
    assert.equal(lines.length, 1, 'debug is below the default level');
    const j: string[] = [];
    const jl = createLineLogger('x', { write: (l) => j.push(l), journal: true, level: 'debug' });
    jl.error({}, 'e');
    jl.warn({}, 'w');
    jl.debug({}, 'd');
    assert.deepEqual(j.map((l) => l.slice(0, 4)), ['<3>{', '<4>{', '<7>{']);
    assert.ok(j.every((l) => l.endsWith('}\n')));
  } finally {
    if (saved !== undefined) process.env.QUBES_NET_LOG_LEVEL = saved;
  }
});
