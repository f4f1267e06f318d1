// Conformance of our daemon with upstream's wire protocol, through a raw socket client against
// a daemon spawned as its own process: every operation with its reply types and terminators,
// watch semantics, limits at and past each bound, and the read-only socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageType } from '@qubes-net/qubesdb';
import { startQubesDB, type RunningQubesDB } from '../helpers/qubesdb.js';
import { RawQdbClient, rawHeader } from '../helpers/raw-qdb.js';

const { Read, Write, Multiread, List, Rm, Watch, RespOk, RespErrorNoent, RespError, RespRead, RespWatch, RespMultiread } = MessageType;

let db: RunningQubesDB;
const clients: RawQdbClient[] = [];

async function client(socket: 'rw' | 'ro' = 'rw'): Promise<RawQdbClient> {
  const c = await RawQdbClient.connect(socket === 'rw' ? db.socketPath : db.roSocketPath);
  clients.push(c);
  return c;
}

before(async () => {
  db = await startQubesDB();
});
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await db?.stop();
});

describe('READ and WRITE', () => {
  test('write creates, read returns the value; replies echo the path', async () => {
    const c = await client();
    assert.deepEqual(await c.write('/rw/a', '10.137.0.7'), { type: RespOk, path: '/rw/a', data: Buffer.alloc(0) });
    const r = await c.request(Read, '/rw/a');
    assert.equal(r.type, RespRead);
    assert.equal(r.path, '/rw/a');
    assert.equal(r.data.toString(), '10.137.0.7');
  });

  test('a missing key is RESP_ERROR_NOENT with the path echoed', async () => {
    const c = await client();
    assert.deepEqual(await c.request(Read, '/rw/missing'), { type: RespErrorNoent, path: '/rw/missing', data: Buffer.alloc(0) });
  });

  test('overwrite replaces; empty values are values', async () => {
    const c = await client();
    await c.write('/rw/b', 'one');
    await c.write('/rw/b', 'two');
    assert.equal(String(await c.read('/rw/b')), 'two');
    assert.equal((await c.write('/rw/b', '')).type, RespOk);
    assert.deepEqual(await c.read('/rw/b'), Buffer.alloc(0));
  });

  test('values are bytes: everything but NUL survives unchanged', async () => {
    const c = await client();
    const all = Buffer.from(Array.from({ length: 255 }, (_, i) => i + 1));
    await c.write('/rw/bytes', all);
    assert.deepEqual(await c.read('/rw/bytes'), all);
  });

  test('a path ending in / is never a key: READ gives NOENT', async () => {
    const c = await client();
    await c.write('/rw/dir/x', '1');
    assert.equal((await c.request(Read, '/rw/dir/')).type, RespErrorNoent);
  });

  for (const bad of ['relative', '/rw/trailing/', '', '/']) {
    test(`WRITE to invalid key ${JSON.stringify(bad)}: RESP_ERROR, then the client is disconnected`, async () => {
      const c = await client();
      const r = await c.write(bad, 'v');
      assert.equal(r.type, RespError);
      assert.equal(r.path, bad);
      await c.waitClosed();
      const other = await client();
      assert.equal((await other.request(Read, bad.replace(/\/$/, '') || '/x')).type, RespErrorNoent, 'nothing was stored');
    });
  }

  test('requests pipelined in one write are answered in order', async () => {
    const c = await client();
    const burst = [];
    for (let i = 0; i < 50; i++) burst.push(rawHeader(Write, `/pipe/k${i}`, 1), Buffer.from([0x30 + (i % 10)]));
    for (let i = 0; i < 50; i++) burst.push(rawHeader(Read, `/pipe/k${i}`, 0));
    c.sendRaw(Buffer.concat(burst));
    for (let i = 0; i < 50; i++) assert.deepEqual(await c.nextReply(), { type: RespOk, path: `/pipe/k${i}`, data: Buffer.alloc(0) });
    for (let i = 0; i < 50; i++) {
      const r = await c.nextReply();
      assert.equal(r.type, RespRead);
      assert.equal(r.path, `/pipe/k${i}`);
      assert.equal(r.data.toString(), String(i % 10));
    }
  });
});

describe('MULTIREAD and LIST', () => {
  before(async () => {
    const c = await client();
    for (const [k, v] of [['/ml/qubes-ip', '10.0.0.1'], ['/ml/qubes-ip6', 'fd09::1'], ['/ml/qubes-iq', 'x'], ['/ml/d/b', 'B'], ['/ml/d/a', 'A'], ['/ml/d', 'D'], ['/ml/d/c/deep', 'C']]) {
      await c.write(k!, v!);
    }
  });

  test('MULTIREAD: raw prefix (no / boundary), ascending, values, empty-path terminator', async () => {
    const c = await client();
    assert.deepEqual(await c.multiread('/ml/qubes-ip'), [['/ml/qubes-ip', '10.0.0.1'], ['/ml/qubes-ip6', 'fd09::1']]);
    assert.deepEqual(await c.multiread('/ml/d/'), [['/ml/d/a', 'A'], ['/ml/d/b', 'B'], ['/ml/d/c/deep', 'C']]);
    assert.deepEqual(await c.multiread('/ml/d'), [['/ml/d', 'D'], ['/ml/d/a', 'A'], ['/ml/d/b', 'B'], ['/ml/d/c/deep', 'C']]);
    assert.deepEqual(await c.multiread('/ml/none'), []);
  });

  test('MULTIREAD of an exact key returns just it', async () => {
    const c = await client();
    assert.deepEqual(await c.multiread('/ml/qubes-iq'), [['/ml/qubes-iq', 'x']]);
  });

  test('MULTIREAD with an empty path dumps everything in descending order', async () => {
    const c = await client();
    const all = await c.multiread('');
    const paths = all.map(([p]) => p);
    assert.ok(paths.length >= 7);
    assert.deepEqual(paths, [...paths].sort().reverse());
    assert.ok(all.some(([p, v]) => p === '/ml/d/c/deep' && v === 'C'));
  });

  test('LIST: paths only, ascending, raw prefix, terminator; empty prefix lists everything ascending', async () => {
    const c = await client();
    assert.deepEqual(await c.list('/ml/qubes-ip'), ['/ml/qubes-ip', '/ml/qubes-ip6']);
    assert.deepEqual(await c.list('/ml/d/'), ['/ml/d/a', '/ml/d/b', '/ml/d/c/deep']);
    assert.deepEqual(await c.list('/ml/zzz'), []);
    const all = await c.list('');
    assert.deepEqual(all, [...all].sort());
    assert.deepEqual(all, (await c.multiread('')).map(([p]) => p).reverse());
  });

  test('the terminator is a header with an empty path and data_len 0', async () => {
    const c = await client();
    c.send(Multiread, '/ml/none');
    const r = await c.nextReply();
    assert.deepEqual(r, { type: RespMultiread, path: '', data: Buffer.alloc(0) });
  });
});

describe('RM', () => {
  test('exact: OK and gone; again: NOENT', async () => {
    const c = await client();
    await c.write('/rm/a', '1');
    await c.write('/rm/ab', '2');
    assert.deepEqual(await c.rm('/rm/a'), { type: RespOk, path: '/rm/a', data: Buffer.alloc(0) });
    assert.equal(await c.read('/rm/a'), undefined);
    assert.equal(String(await c.read('/rm/ab')), '2', 'exact rm is not a prefix rm');
    assert.equal((await c.rm('/rm/a')).type, RespErrorNoent);
  });

  test('trailing / removes every key with that prefix, not the key without the /', async () => {
    const c = await client();
    for (const k of ['/rmd/x', '/rmd/x/1', '/rmd/x/2/3', '/rmd/xy']) await c.write(k, 'v');
    assert.equal((await c.rm('/rmd/x/')).type, RespOk);
    assert.deepEqual(await c.list('/rmd/'), ['/rmd/x', '/rmd/xy']);
    assert.equal((await c.rm('/rmd/x/')).type, RespErrorNoent, 'nothing left to remove');
  });

  test('RM of an empty path or a relative directory removes nothing', async () => {
    const c = await client();
    assert.equal((await c.rm('')).type, RespErrorNoent);
    assert.equal((await c.rm('rmd/')).type, RespErrorNoent);
    assert.deepEqual(await c.list('/rmd/'), ['/rmd/x', '/rmd/xy']);
  });
});

describe('watches', () => {
  test('exact watch fires only for that path', async () => {
    const w = await client();
    const writer = await client();
    assert.deepEqual(await w.watch('/wx/a'), { type: RespOk, path: '/wx/a', data: Buffer.alloc(0) });
    await writer.write('/wx/ab', '1');
    await writer.write('/wx/a/b', '1');
    await writer.write('/wx/a', '1');
    assert.equal(await w.nextEvent(), '/wx/a');
    // Fence: a round trip on the watcher; nothing else may have arrived meanwhile.
    await w.read('/wx/a');
    assert.deepEqual(w.events, []);
  });

  test('a watch on a missing path fires when it is created; writes fire even if unchanged', async () => {
    const w = await client();
    const writer = await client();
    await w.watch('/wu/k');
    await writer.write('/wu/k', 'same');
    assert.equal(await w.nextEvent(), '/wu/k');
    await writer.write('/wu/k', 'same');
    assert.equal(await w.nextEvent(), '/wu/k');
  });

  test('directory watch X/ fires for everything under X/, not for X or X-prefixed siblings', async () => {
    const w = await client();
    const writer = await client();
    await w.watch('/wd/x/');
    await writer.write('/wd/x', 'no');
    await writer.write('/wd/xy', 'no');
    await writer.write('/wd/x/1', 'yes');
    await writer.write('/wd/x/2/3', 'yes');
    assert.equal(await w.nextEvent(), '/wd/x/1');
    assert.equal(await w.nextEvent(), '/wd/x/2/3');
    await w.read('/wd/x');
    assert.deepEqual(w.events, []);
  });

  test('several registrations of one path give several events; UNWATCH removes one', async () => {
    const w = await client();
    const writer = await client();
    await w.watch('/wm/k');
    await w.watch('/wm/k');
    await w.watch('/wm/');
    await writer.write('/wm/k', 'v');
    const got = [await w.nextEvent(), await w.nextEvent(), await w.nextEvent()];
    assert.deepEqual(got, ['/wm/k', '/wm/k', '/wm/k']);
    assert.equal((await w.unwatch('/wm/k')).type, RespOk);
    await writer.write('/wm/k', 'v');
    assert.deepEqual([await w.nextEvent(), await w.nextEvent()], ['/wm/k', '/wm/k']);
    await w.read('/wm/k');
    assert.deepEqual(w.events, [], 'exactly two after one UNWATCH');
    assert.equal((await w.unwatch('/wm/k')).type, RespOk);
    assert.equal((await w.unwatch('/wm/k')).type, RespErrorNoent, 'no registration left; not fatal');
    assert.equal((await w.unwatch('/wm/')).type, RespOk);
    await writer.write('/wm/k', 'v');
    await w.read('/wm/k');
    assert.deepEqual(w.events, []);
    assert.equal(w.isClosed, false);
  });

  test("the writer's own watch fires, after its RESP_OK", async () => {
    const c = await client();
    await c.watch('/wself/k');
    c.received.length = 0;
    await c.write('/wself/k', 'v');
    assert.equal(await c.nextEvent(), '/wself/k');
    assert.deepEqual(c.received.map((m) => m.type), [RespOk, RespWatch]);
  });

  test('rm of a directory fires X/ for directory watches, not the children’s exact watches', async () => {
    const w = await client();
    const writer = await client();
    await writer.write('/wr/x/1', 'a');
    await writer.write('/wr/x/2', 'b');
    await w.watch('/wr/x/1');
    await w.watch('/wr/x/');
    await w.watch('/wr/');
    await writer.rm('/wr/x/');
    assert.deepEqual([await w.nextEvent(), await w.nextEvent()], ['/wr/x/', '/wr/x/']);
    await w.read('/wr/x/1');
    assert.deepEqual(w.events, [], 'the exact watch on /wr/x/1 did not fire');
  });

  test('rm of a key fires its exact watch; a failed rm fires nothing', async () => {
    const w = await client();
    const writer = await client();
    await writer.write('/wrk/k', 'a');
    await w.watch('/wrk/k');
    assert.equal((await writer.rm('/wrk/k')).type, RespOk);
    assert.equal(await w.nextEvent(), '/wrk/k');
    assert.equal((await writer.rm('/wrk/k')).type, RespErrorNoent);
    await w.read('/wrk/k');
    assert.deepEqual(w.events, []);
  });

  test('watch on / sees every change', async () => {
    const w = await client();
    const writer = await client();
    await w.watch('/');
    await writer.write('/wall/a', '1');
    assert.equal(await w.nextEvent(), '/wall/a');
    await w.unwatch('/');
  });

  test('an event fired by another client arrives before the replies to a later request, and does not break a multi-message reply', async () => {
    const w = await client();
    const writer = await client();
    for (let i = 0; i < 20; i++) await writer.write(`/wi/k${String(i).padStart(2, '0')}`, `v${i}`);
    await w.watch('/wi/');
    await writer.write('/wi/k05', 'changed');
    const mr = await w.multiread('/wi/');
    assert.equal(mr.length, 20);
    assert.deepEqual(mr[5], ['/wi/k05', 'changed']);
    const eventAt = w.received.findIndex((m) => m.type === RespWatch && m.path === '/wi/k05');
    const firstReply = w.received.findIndex((m) => m.type === RespMultiread);
    assert.ok(eventAt !== -1 && eventAt < firstReply, 'the event was queued before the MULTIREAD request');
    assert.equal(await w.nextEvent(), '/wi/k05');
  });

  test('events interleave with a stream of requests and every one is delivered', async () => {
    const w = await client();
    const writer = await client();
    await w.watch('/wj/');
    const n = 200;
    const writes = (async () => {
      for (let i = 0; i < n; i++) await writer.write(`/wj/${i}`, 'x');
    })();
    let lists = 0;
    while (w.events.length < n) {
      await w.list('/wj/');
      lists++;
      if (lists > 100_000) throw new Error('events never arrived');
    }
    await writes;
    assert.deepEqual(w.events, Array.from({ length: n }, (_, i) => `/wj/${i}`));
  });

  test('watches go away with their client: writes after a watcher disconnected still work', async () => {
    const writer = await client();
    for (let i = 0; i < 5; i++) {
      const w = await RawQdbClient.connect(db.socketPath);
      await w.watch('/wgone/');
      await w.watch('/wgone/k');
      await w.close();
    }
    for (let i = 0; i < 20; i++) assert.equal((await writer.write('/wgone/k', String(i))).type, RespOk);
    assert.equal(String(await writer.read('/wgone/k')), '19');
  });
});

describe('limits', () => {
  test('63-character path works end to end', async () => {
    const c = await client();
    const p = '/lim/' + 'a'.repeat(58);
    assert.equal(p.length, 63);
    assert.equal((await c.write(p, 'v')).type, RespOk);
    assert.equal(String(await c.read(p)), 'v');
    assert.deepEqual(await c.list('/lim/a'), [p]);
  });

  test('a 64-character path field without NUL is cut to 63, as upstream forces byte 63 to NUL', async () => {
    const c = await client();
    const p64 = '/lim64/' + 'b'.repeat(57);
    assert.equal(p64.length, 64);
    c.sendRaw(Buffer.concat([rawHeader(Write, p64, 1), Buffer.from('z')]));
    const r = await c.nextReply();
    assert.deepEqual(r, { type: RespOk, path: p64.slice(0, 63), data: Buffer.alloc(0) });
    assert.deepEqual(await c.list('/lim64/'), [p64.slice(0, 63)]);
  });

  test('3071-byte value is stored; 3072 is refused (RESP_ERROR, payload skipped, client kept, old value intact)', async () => {
    const c = await client();
    const max = Buffer.alloc(3071, 0x61);
    assert.equal((await c.write('/lim/v', max)).type, RespOk);
    assert.deepEqual(await c.read('/lim/v'), max);
    const r = await c.write('/lim/v', Buffer.alloc(3072, 0x62));
    assert.equal(r.type, RespError);
    assert.equal(r.path, '/lim/v');
    assert.deepEqual(await c.read('/lim/v'), max, 'next request parses: the 3072 bytes were skipped');
    assert.equal(c.isClosed, false);
  });

  test('a NUL in a value: RESP_ERROR, client kept, nothing stored', async () => {
    const c = await client();
    await c.write('/lim/nul', 'before');
    const r = await c.write('/lim/nul', Buffer.from('a\0b'));
    assert.equal(r.type, RespError);
    assert.equal(String(await c.read('/lim/nul')), 'before');
    assert.equal((await c.write('/lim/nul2', Buffer.from([0]))).type, RespError);
    assert.equal(await c.read('/lim/nul2'), undefined);
  });
});

describe('read-only socket', () => {
  test('reads, lists, multireads and watches work', async () => {
    const rw = await client();
    const ro = await client('ro');
    await rw.write('/ro/k', 'v');
    assert.equal(String(await ro.read('/ro/k')), 'v');
    assert.deepEqual(await ro.list('/ro/'), ['/ro/k']);
    assert.deepEqual(await ro.multiread('/ro/'), [['/ro/k', 'v']]);
    await ro.watch('/ro/k');
    await rw.write('/ro/k', 'w');
    assert.equal(await ro.nextEvent(), '/ro/k');
  });

  test('WRITE and RM are refused with RESP_ERROR and the client stays connected; data unchanged', async () => {
    const rw = await client();
    const ro = await client('ro');
    const watcher = await client();
    await rw.write('/ro2/k', 'orig');
    await watcher.watch('/ro2/');
    assert.deepEqual(await ro.write('/ro2/k', 'evil'), { type: RespError, path: '/ro2/k', data: Buffer.alloc(0) });
    assert.deepEqual(await ro.rm('/ro2/k'), { type: RespError, path: '/ro2/k', data: Buffer.alloc(0) });
    assert.equal((await ro.rm('/ro2/')).type, RespError);
    assert.equal((await ro.write('/ro2/new', 'x')).type, RespError);
    assert.equal(String(await ro.read('/ro2/k')), 'orig', 'same connection still served');
    assert.deepEqual(await rw.list('/ro2/'), ['/ro2/k']);
    await watcher.read('/ro2/k');
    assert.deepEqual(watcher.events, [], 'refused changes fire nothing');
    // An invalid key on the RO socket is refused as read-only, not as a protocol error.
    assert.equal((await ro.write('relative', 'x')).type, RespError);
    assert.equal(ro.isClosed, false);
  });
});

describe('other message types from a client', () => {
  test('a response type sent by a client is a bad header: RESP_ERROR, client kept', async () => {
    const c = await client();
    for (const t of [RespOk, RespError, RespMultiread, RespWatch, 200, 255]) {
      const r = await c.request(t, '/x');
      assert.equal(r.type, RespError, `type ${t}`);
      assert.equal(r.path, '/x');
    }
    assert.equal((await c.request(Read, '/x')).type, RespErrorNoent);
  });

  test('WATCH/LIST/MULTIREAD/RM with a payload: RESP_ERROR, payload skipped, client kept', async () => {
    const c = await client();
    await c.write('/pl/k', 'v');
    for (const t of [Watch, List, Multiread, Rm, MessageType.Unwatch]) {
      const r = await c.request(t, '/pl/k', 'payload');
      assert.equal(r.type, RespError, `type ${t}`);
    }
    assert.equal(String(await c.read('/pl/k')), 'v', 'RM with payload removed nothing');
  });
});
