// The FFI client (openQubesDB over our libqubesdb through koffi) against the real daemon in
// its own process: every operation, errors, limits, watch semantics, the read-only socket,
// domain names, run-dir handling.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { openQubesDB, QubesDBError, type QubesDB, type QubesDBWatch } from '@qubes-net/qubesdb';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { nextEvents } from './ffi-helpers.js';

const E = osConstants.errno;

async function rejectsWith(p: Promise<unknown>, op: string, errno: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof QubesDBError, `not a QubesDBError: ${String(err)}`);
    assert.equal(err.op, op);
    assert.equal(err.errno, errno, err.message);
    return true;
  });
}

describe('FFI client: operations', () => {
  let daemon: RunningQubesDB;
  let db: QubesDB;
  before(async () => {
    daemon = await startQubesDB();
    db = openQubesDB({ runDir: daemon.runDir });
  });
  after(async () => {
    await db?.close();
    await daemon?.stop();
  });

  test('write then read; missing keys read as undefined', async () => {
    await db.write('/qubes-ip', '10.137.0.7');
    assert.equal(await db.read('/qubes-ip'), '10.137.0.7');
    assert.equal(await db.read('/qubes-nothing'), undefined);
    await db.write('/qubes-ip', '10.137.0.8');
    assert.equal(await db.read('/qubes-ip'), '10.137.0.8');
  });

  test('empty and UTF-8 values keep their exact bytes', async () => {
    await db.write('/v/empty', '');
    assert.equal(await db.read('/v/empty'), '');
    await db.write('/v/utf8', 'héllo wörld ✓');
    assert.equal(await db.read('/v/utf8'), 'héllo wörld ✓');
    await db.write('/v/ctl', 'a\tb\nc');
    assert.equal(await db.read('/v/ctl'), 'a\tb\nc');
  });

  test('list and multiread: raw prefix, ascending, no directory boundary', async () => {
    await db.write('/net/qubes-ip6', 'fd09::7');
    await db.write('/net/qubes-ip', '10.137.0.7');
    await db.write('/net/qubes-gateway', '10.137.0.1');
    await db.write('/net/zzz/deep', 'x');
    assert.deepEqual(await db.list('/net/qubes-ip'), ['/net/qubes-ip', '/net/qubes-ip6']);
    assert.deepEqual(await db.list('/net/'), ['/net/qubes-gateway', '/net/qubes-ip', '/net/qubes-ip6', '/net/zzz/deep']);
    assert.deepEqual(await db.list('/nonexistent/'), []);
    assert.deepEqual(
      [...(await db.multiread('/net/qubes-'))],
      [['/net/qubes-gateway', '10.137.0.1'], ['/net/qubes-ip', '10.137.0.7'], ['/net/qubes-ip6', 'fd09::7']],
    );
    assert.equal((await db.multiread('/nonexistent/')).size, 0);
  });

  test('many entries come back complete and ascending', async () => {
    const keys = Array.from({ length: 500 }, (_, i) => `/many/k${String(i).padStart(4, '0')}`);
    for (const k of keys.slice().reverse()) await db.write(k, `value of ${k}`);
    assert.deepEqual(await db.list('/many/'), keys);
    const all = await db.multiread('/many/');
    assert.deepEqual([...all.keys()], keys);
    for (const k of keys) assert.equal(all.get(k), `value of ${k}`);
  });

  test('rm: one key, a directory prefix, and a missing key', async () => {
    await db.write('/rm/a', '1');
    await db.write('/rm/b/c', '2');
    await db.write('/rmx', '3');
    await db.rm('/rm/a');
    assert.equal(await db.read('/rm/a'), undefined);
    await db.rm('/rm/does-not-exist');
    await db.rm('/rm/');
    assert.deepEqual(await db.list('/rm'), ['/rmx']);
  });

  test('path limits: 63 characters work, 64 are refused', async () => {
    const p63 = '/' + 'p'.repeat(62);
    await db.write(p63, 'x');
    assert.equal(await db.read(p63), 'x');
    await rejectsWith(db.write(p63 + 'p', 'x'), 'write', E.EINVAL);
    await rejectsWith(db.read(p63 + 'p'), 'read', E.EINVAL);
  });

  test('invalid paths are refused before anything is sent', async () => {
    await rejectsWith(db.write('relative', 'x'), 'write', E.EINVAL);
    await rejectsWith(db.write('/dir/', 'x'), 'write', E.EINVAL);
    await rejectsWith(db.write('/with space', 'x'), 'write', E.EINVAL);
    await rejectsWith(db.write('/nul\0byte', 'x'), 'write', E.EINVAL);
    await rejectsWith(db.read('/dir/'), 'read', E.EINVAL);
    await rejectsWith(db.rm(''), 'rm', E.EINVAL);
    await rejectsWith(db.list('no-slash'), 'list', E.EINVAL);
    assert.throws(() => db.watch(['bad path']), (err: unknown) => err instanceof QubesDBError && err.errno === E.EINVAL);
    await db.write('/all-allowed_chars.1:2@x-y', 'ok');
    assert.equal(await db.read('/all-allowed_chars.1:2@x-y'), 'ok');
  });

  test('value limits: 3071 bytes stored, 3072 refused by the daemon, 3073 by the client', async () => {
    const v3071 = 'v'.repeat(3071);
    await db.write('/big', v3071);
    assert.equal(await db.read('/big'), v3071);
    await assert.rejects(db.write('/big', 'v'.repeat(3072)), (err: unknown) => err instanceof QubesDBError && err.op === 'write');
    await rejectsWith(db.write('/big', 'v'.repeat(3073)), 'write', E.EMSGSIZE);
    await rejectsWith(db.write('/nul', 'a\0b'), 'write', E.EINVAL);
    // The connection survives every refusal.
    assert.equal(await db.read('/big'), v3071);
  });

  test('the client does not leave QUBESDB_RUN_DIR behind', () => {
    const before = process.env.QUBESDB_RUN_DIR;
    const other = openQubesDB({ runDir: daemon.runDir });
    assert.equal(process.env.QUBESDB_RUN_DIR, before);
    return other.close();
  });

  test('operations after close fail with EBADF', async () => {
    const c = openQubesDB({ runDir: daemon.runDir });
    await c.close();
    await rejectsWith(c.read('/qubes-ip'), 'read', E.EBADF);
  });
});

describe('FFI client: watches', () => {
  let daemon: RunningQubesDB;
  let db: QubesDB;
  const watches: QubesDBWatch[] = [];
  const watch = (paths: string[]): QubesDBWatch => {
    const w = db.watch(paths);
    watches.push(w);
    return w;
  };
  before(async () => {
    daemon = await startQubesDB();
    db = openQubesDB({ runDir: daemon.runDir });
  });
  after(async () => {
    await Promise.all(watches.map((w) => w.close()));
    await db?.close();
    await daemon?.stop();
  });

  test('exact path vs directory prefix; rm of a directory fires the directory only', async () => {
    const w = watch(['/w/exact', '/wd/', '/w/sentinel']);
    const events = nextEvents(w);
    await db.write('/w/exact', '1');
    await db.write('/w/exact', '1'); // unchanged value still fires
    await db.write('/w/exact-longer', '1'); // no event: exact match only
    await db.write('/wd/child', '1');
    await db.write('/wd/sub/deeper', '1');
    await db.rm('/w/exact');
    await db.rm('/wd/');
    await db.write('/w/sentinel', 'end');
    assert.deepEqual(await events.take(7), ['/w/exact', '/w/exact', '/wd/child', '/wd/sub/deeper', '/w/exact', '/wd/', '/w/sentinel']);
  });

  test('exact watches on children do not fire when their directory is removed', async () => {
    await db.write('/kid/x', '1');
    const w = watch(['/kid/x', '/kid-sentinel']);
    const events = nextEvents(w);
    await db.rm('/kid/');
    await db.write('/kid-sentinel', '1');
    assert.deepEqual(await events.take(1), ['/kid-sentinel']);
  });

  test('a burst of writes arrives complete and in order', async () => {
    const w = watch(['/burst/']);
    const events = nextEvents(w);
    const expected = Array.from({ length: 300 }, (_, i) => `/burst/k${i}`);
    for (const p of expected) await db.write(p, 'x');
    assert.deepEqual(await events.take(expected.length), expected);
  });

  test('several watches at once, beyond the libuv pool size, all fire and fs work goes on', async () => {
    const ws = Array.from({ length: 10 }, (_, i) => watch([`/multi/${i}`]));
    const streams = ws.map((w) => nextEvents(w));
    // The file system still works with all these watches open (no pool thread per watch).
    const { readFile } = await import('node:fs/promises');
    assert.ok((await readFile('/proc/self/status', 'utf8')).includes('Name:'));
    for (let i = 0; i < ws.length; i++) await db.write(`/multi/${i}`, 'x');
    for (let i = 0; i < ws.length; i++) assert.deepEqual(await streams[i]!.take(1), [`/multi/${i}`]);
  });

  test('two watches on the same path each get the event', async () => {
    const a = nextEvents(watch(['/same']));
    const b = nextEvents(watch(['/same']));
    await db.write('/same', '1');
    assert.deepEqual(await a.take(1), ['/same']);
    assert.deepEqual(await b.take(1), ['/same']);
  });

  test('close ends the iteration, also while it is waiting', async () => {
    const w = db.watch(['/never-written']);
    const done = (async () => {
      const got: string[] = [];
      for await (const p of w) got.push(p);
      return got;
    })();
    await w.close();
    assert.deepEqual(await done, []);
    await w.close(); // twice is fine
  });
});

describe('FFI client: sockets and names', () => {
  test('falls back to the read-only socket; writes are refused there', async (t) => {
    const daemon = await startQubesDB();
    t.after(() => daemon.stop());
    const rw = openQubesDB({ runDir: daemon.runDir });
    t.after(() => rw.close());
    await rw.write('/ro/key', 'visible');
    unlinkSync(daemon.socketPath);
    const ro = openQubesDB({ runDir: daemon.runDir });
    t.after(() => ro.close());
    assert.equal(await ro.read('/ro/key'), 'visible');
    await rejectsWith(ro.write('/ro/key', 'x'), 'write', E.EACCES);
    await rejectsWith(ro.rm('/ro/key'), 'rm', E.EACCES);
    assert.deepEqual(await ro.list('/ro/'), ['/ro/key']);
  });

  test('a domain name selects qubesdb.NAME.sock', async (t) => {
    const daemon = await startQubesDB({ name: 'work' });
    t.after(() => daemon.stop());
    const db = openQubesDB({ runDir: daemon.runDir, name: 'work' });
    t.after(() => db.close());
    await db.write('/name', 'work');
    assert.equal(await db.read('/name'), 'work');
    assert.throws(() => openQubesDB({ runDir: daemon.runDir }), (err: unknown) => err instanceof QubesDBError && err.op === 'open');
  });

  test('opening without a daemon fails with a QubesDBError naming the socket', async (t) => {
    const daemon = await startQubesDB();
    const dir = daemon.runDir;
    await daemon.stop();
    t.after(() => undefined);
    assert.throws(
      () => openQubesDB({ runDir: dir }),
      (err: unknown) => err instanceof QubesDBError && err.op === 'open' && err.message.includes(dir),
    );
  });

  test('256 clients are served at once; the 257th is turned away until one leaves', async (t) => {
    const daemon = await startQubesDB();
    t.after(() => daemon.stop());
    const clients: QubesDB[] = [];
    t.after(() => Promise.all(clients.map((c) => c.close())));
    for (let i = 0; i < 256; i++) clients.push(openQubesDB({ runDir: daemon.runDir }));
    await clients[0]!.write('/count', '256');
    const values = await Promise.all(clients.map((c) => c.read('/count')));
    assert.ok(values.every((v) => v === '256'));
    const extra = openQubesDB({ runDir: daemon.runDir });
    clients.push(extra);
    await assert.rejects(extra.read('/count'), (err: unknown) => err instanceof QubesDBError && err.errno === E.EPIPE);
    await clients.shift()!.close();
    const { waitFor } = await import('../helpers/wait.js');
    assert.equal(await waitFor('a free client slot', () => extra.read('/count').catch(() => undefined)), '256');
  });
});
