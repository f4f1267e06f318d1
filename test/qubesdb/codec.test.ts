// The wire codec on its own: encode/decode round trips, incremental parsing across any chunk
// split, and rejection of every kind of malformed header the way the daemon must reject it
// (payload skipped, one 'invalid' item, the stream still in sync afterwards).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  DATA_LEN_OFFSET,
  HEADER_SIZE,
  MAX_PATH_LENGTH,
  MAX_VALUE_LENGTH,
  MessageParser,
  MessageType,
  QDB_MAX_DATA,
  decodeHeader,
  encodeMessage,
  isValidKey,
  isValidPath,
  isValidValue,
  type ParsedItem,
} from '@qubes-net/qubesdb';
import { rawHeader } from '../helpers/raw-qdb.js';

const PATH_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/.:@';

/** Paths the daemon accepts: allowed characters, '-' not first, ≤ 63. */
const validPath = fc
  .string({ unit: fc.constantFrom(...PATH_CHARS), maxLength: MAX_PATH_LENGTH })
  .filter((p) => !p.startsWith('-'));
const value = fc.uint8Array({ maxLength: MAX_VALUE_LENGTH }).map((a) => Buffer.from(a.map((b) => b || 1)));
const requestType = fc.integer({ min: MessageType.Read, max: MessageType.Unwatch });
const responseType = fc.integer({ min: MessageType.RespOk, max: MessageType.RespWatch });

/** Feeds `bytes` cut at the given points and collects every item. */
function parseSplit(parser: MessageParser, bytes: Buffer, cuts: number[]): ParsedItem[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const items: ParsedItem[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    parser.feed(bytes.subarray(prev, p));
    prev = p;
    for (let it = parser.next(); it; it = parser.next()) items.push(it);
  }
  return items;
}

test('header layout: type at 0, NUL-terminated path at 1, data_len u32 LE at 68, 72 bytes', () => {
  const m = encodeMessage(MessageType.Write, '/qubes-ip', Buffer.from('10.137.0.7'));
  assert.equal(HEADER_SIZE, 72);
  assert.equal(m.length, 72 + 10);
  assert.equal(m[0], 1);
  assert.equal(m.subarray(1, 10).toString('latin1'), '/qubes-ip');
  assert.ok(m.subarray(10, 68).every((b) => b === 0), 'unused path bytes and padding are zero');
  assert.deepEqual([...m.subarray(68, 72)], [10, 0, 0, 0]);
  assert.equal(m.subarray(72).toString(), '10.137.0.7');
});

test("message type codes are upstream's enum order", () => {
  assert.deepEqual(
    [MessageType.Read, MessageType.Write, MessageType.Multiread, MessageType.List, MessageType.Rm, MessageType.Watch, MessageType.Unwatch,
      MessageType.RespOk, MessageType.RespErrorNoent, MessageType.RespError, MessageType.RespRead, MessageType.RespMultiread, MessageType.RespList, MessageType.RespWatch],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
  );
});

test('limits: 63-char paths, 3071-byte values, no NUL', () => {
  assert.equal(MAX_PATH_LENGTH, 63);
  assert.equal(QDB_MAX_DATA, 3072);
  assert.equal(MAX_VALUE_LENGTH, 3071);
  assert.ok(isValidPath('/' + 'a'.repeat(62)));
  assert.ok(!isValidPath('/' + 'a'.repeat(63)));
  assert.ok(isValidValue(Buffer.alloc(3071, 0x41)));
  assert.ok(!isValidValue(Buffer.alloc(3072, 0x41)));
  assert.ok(!isValidValue(Buffer.from('a\0b')));
  assert.ok(isValidValue(Buffer.alloc(0)));
  assert.throws(() => encodeMessage(MessageType.Read, '/' + 'a'.repeat(63)), RangeError);
});

test('path character set: a-z A-Z 0-9 - _ / . : @, with no leading -', () => {
  for (const ok of ['', '/', '/a-b_c.d:e@f/G9', '/qubes-firewall/10.137.0.7/0001', 'relative']) assert.ok(isValidPath(ok), ok);
  for (const bad of ['-x', '/a b', '/a\nb', '/a\\b', '/a*', '/ä', '/a$', '/a%b', '/a\0b', '/a"', "/a'", '/a,b', '/a+b', '/(x)']) {
    assert.ok(!isValidPath(bad), JSON.stringify(bad));
  }
  assert.ok(isValidKey('/a'));
  assert.ok(!isValidKey('a'));
  assert.ok(!isValidKey('/a/'));
  assert.ok(!isValidKey(''));
});

test('property: any valid message round-trips through encode and an arbitrarily chunked parser', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ type: requestType, path: validPath, data: value }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (msgs, cuts) => {
        const bytes = Buffer.concat(msgs.map((m) => encodeMessage(m.type, m.path, m.data)));
        const parser = new MessageParser({ accept: 'requests' });
        const items = parseSplit(parser, bytes, cuts);
        assert.deepEqual(
          items,
          msgs.map((m) => ({ kind: 'message', type: m.type, path: m.path, data: m.data })),
        );
        assert.equal(parser.buffered, 0);
        assert.equal(parser.midMessage, false);
      },
    ),
    { numRuns: 300 },
  );
});

test('property: decodeHeader reads back what encodeMessage wrote', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }), validPath, fc.integer({ min: 0, max: 3071 }), (type, path, len) => {
      const m = encodeMessage(type, path, Buffer.alloc(len, 0x61));
      const h = decodeHeader(m);
      assert.equal(h.type, type);
      assert.equal(h.pathBytes.toString('latin1'), path);
      assert.equal(h.dataLen, len);
    }),
  );
});

test('responses are parsed in the client direction, requests refused there', () => {
  fc.assert(
    fc.property(responseType, validPath, value, (type, path, data) => {
      const p = new MessageParser({ accept: 'responses' });
      p.feed(encodeMessage(type, path, data));
      assert.deepEqual(p.next(), { kind: 'message', type, path, data });
    }),
  );
  const p = new MessageParser({ accept: 'responses' });
  p.feed(encodeMessage(MessageType.Write, '/a', Buffer.from('x')));
  const it = p.next();
  assert.equal(it?.kind, 'invalid');
  assert.equal(it.kind === 'invalid' && it.error, 'bad-type');
});

/** Feeds one bad message followed by a good one; the bad one must give one 'invalid' item, the good one must still parse. */
function assertRejectedThenInSync(bad: Buffer, expected: { error: string; type: number; dataLen: number }, cuts: number[]): void {
  const good = encodeMessage(MessageType.Read, '/after');
  const parser = new MessageParser({ accept: 'requests' });
  const items = parseSplit(parser, Buffer.concat([bad, good]), cuts);
  assert.equal(items.length, 2, `items: ${JSON.stringify(items)}`);
  const [first, second] = items;
  assert.equal(first!.kind, 'invalid');
  if (first!.kind === 'invalid') {
    assert.equal(first.error, expected.error);
    assert.equal(first.type, expected.type);
    assert.equal(first.dataLen, expected.dataLen);
  }
  assert.deepEqual(second, { kind: 'message', type: MessageType.Read, path: '/after', data: Buffer.alloc(0) });
}

test('property: a bad type (not 0..6 from a client) is rejected after skipping data_len bytes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 7, max: 255 }), validPath, fc.integer({ min: 0, max: 5000 }), fc.array(fc.nat(), { maxLength: 6 }), (type, path, len, cuts) => {
      const bad = Buffer.concat([rawHeader(type, path, len), Buffer.alloc(len, 0x5a)]);
      assertRejectedThenInSync(bad, { error: 'bad-type', type, dataLen: len }, cuts);
    }),
    { numRuns: 200 },
  );
});

test('property: a path with a forbidden byte, or a leading -, is rejected', () => {
  const forbidden = fc.integer({ min: 1, max: 255 }).filter((b) => !PATH_CHARS.includes(String.fromCharCode(b)));
  fc.assert(
    fc.property(
      requestType,
      validPath.filter((p) => p.length < MAX_PATH_LENGTH),
      forbidden,
      fc.nat(),
      fc.integer({ min: 0, max: 100 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      (type, path, byte, at, len, cuts) => {
        const i = at % (path.length + 1);
        const bytes = Buffer.concat([Buffer.from(path.slice(0, i), 'latin1'), Buffer.from([byte]), Buffer.from(path.slice(i), 'latin1')]);
        const bad = Buffer.concat([rawHeader(type, bytes, len), Buffer.alloc(len, 0x61)]);
        assertRejectedThenInSync(bad, { error: 'bad-path', type, dataLen: len }, cuts);
      },
    ),
    { numRuns: 300 },
  );
  assertRejectedThenInSync(rawHeader(MessageType.Read, '-abc', 0), { error: 'bad-path', type: 0, dataLen: 0 }, []);
});

test('property: a data_len of 3072 or more is rejected and exactly that many bytes skipped', () => {
  fc.assert(
    fc.property(requestType, validPath, fc.integer({ min: QDB_MAX_DATA, max: QDB_MAX_DATA + 20000 }), fc.array(fc.nat(), { maxLength: 8 }), (type, path, len, cuts) => {
      const bad = Buffer.concat([rawHeader(type, path, len), Buffer.alloc(len, 0x61)]);
      assertRejectedThenInSync(bad, { error: 'data-too-long', type, dataLen: len }, cuts);
    }),
    { numRuns: 100 },
  );
});

test('a huge data_len is skipped by counting, never buffered', () => {
  const parser = new MessageParser();
  parser.feed(rawHeader(MessageType.Write, '/a', 0xffffffff));
  assert.equal(parser.next(), undefined);
  for (let i = 0; i < 100; i++) {
    parser.feed(Buffer.alloc(64 * 1024));
    assert.equal(parser.next(), undefined);
    assert.equal(parser.buffered, 0, 'skipped bytes are not kept');
  }
  assert.equal(parser.midMessage, true);
});

test('a path field without NUL in its 64 bytes is cut at byte 63, as the daemon forces it', () => {
  // 64 valid characters and no NUL: the daemon reads the first 63.
  const full = '/' + 'b'.repeat(63);
  const parser = new MessageParser();
  parser.feed(rawHeader(MessageType.Read, full, 0));
  assert.deepEqual(parser.next(), { kind: 'message', type: MessageType.Read, path: full.slice(0, 63), data: Buffer.alloc(0) });
  // A forbidden byte at position 63 is overwritten by the NUL, so it does not count.
  const withBadLast = Buffer.concat([Buffer.from('/' + 'c'.repeat(62)), Buffer.from([0x20])]);
  parser.feed(rawHeader(MessageType.Read, withBadLast, 0));
  assert.deepEqual(parser.next(), { kind: 'message', type: MessageType.Read, path: '/' + 'c'.repeat(62), data: Buffer.alloc(0) });
});

test('bytes after the NUL in the path field and the padding are ignored', () => {
  const h = rawHeader(MessageType.Read, Buffer.from('/x\0garbage $%^&*', 'latin1'), 0);
  h.fill(0xee, 65, DATA_LEN_OFFSET);
  const parser = new MessageParser();
  parser.feed(h);
  assert.deepEqual(parser.next(), { kind: 'message', type: MessageType.Read, path: '/x', data: Buffer.alloc(0) });
});

test('property: random bytes never throw, and every item is a message or a typed header error', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const parser = new MessageParser();
      const items = parseSplit(parser, Buffer.from(bytes), cuts);
      for (const it of items) {
        if (it.kind === 'message') {
          assert.ok(it.type <= MessageType.Unwatch);
          assert.ok(isValidPath(it.path));
          assert.ok(it.data.length < QDB_MAX_DATA);
        } else {
          assert.ok(['bad-type', 'bad-path', 'data-too-long'].includes(it.error));
        }
      }
    }),
    { numRuns: 500 },
  );
});

test('a payload is copied out of the chunk it came in', () => {
  const chunk = encodeMessage(MessageType.Write, '/a', Buffer.from('value'));
  const parser = new MessageParser();
  parser.feed(chunk);
  const it = parser.next();
  chunk.fill(0);
  assert.equal(it?.kind === 'message' && it.data.toString(), 'value');
});
