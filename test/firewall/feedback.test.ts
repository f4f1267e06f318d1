// /dns/<ip>/<host> in upstream's format (the Python set text other tools parse), the
// QubesDB path-length limit, and the order of the feedback writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MemoryQubesDB } from '@qubes-net/qubesdb';
import { dnsFeedbackValue, writeApplyFeedback, MAX_PATH } from '@qubes-net/firewall';

test("16.3: the value is the Python set text of the networks: {'a/32', 'b/32'}, /128 for IPv6, set() when empty", () => {
  assert.equal(dnsFeedbackValue(4, ['1.2.3.4']), "{'1.2.3.4/32'}");
  assert.equal(dnsFeedbackValue(4, ['203.0.113.81', '203.0.113.80', '203.0.113.81']), "{'203.0.113.80/32', '203.0.113.81/32'}");
  assert.equal(dnsFeedbackValue(6, ['2001:db8::80']), "{'2001:db8::80/128'}");
  assert.equal(dnsFeedbackValue(6, []), 'set()');
});

test('16.3: the old set is replaced; a path QubesDB cannot hold (over 63 characters) is skipped with a log line, the rest written', async () => {
  const db = new MemoryQubesDB({ '/dns/10.137.0.7/old.test': "{'192.0.2.1/32'}" });
  const lines: any[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  const prefix = '/dns/10.137.0.7/';
  const fits = 'a'.repeat(MAX_PATH - prefix.length);
  const tooLong = 'b'.repeat(MAX_PATH - prefix.length + 1);
  assert.equal((prefix + fits).length, 63);
  await writeApplyFeedback(db, log, {
    addr: '10.137.0.7', family: 4, generation: 5, summary: 'ok 3 rules',
    hosts: new Map([['web.test', ['203.0.113.80']], [fits, ['203.0.113.81']], [tooLong, ['203.0.113.82']]]),
  });
  assert.deepEqual((await db.list(prefix)).sort(), [prefix + fits, prefix + 'web.test'].sort());
  assert.equal(await db.read(prefix + 'web.test'), "{'203.0.113.80/32'}");
  assert.equal(await db.read(prefix + fits), "{'203.0.113.81/32'}");
  assert.ok(lines.some((l) => l.msg === 'dns feedback skipped: path too long' && l.host === tooLong && l.ip === '10.137.0.7'));
  assert.equal(await db.read('/qubes-firewall-handled/10.137.0.7'), '5');
  assert.equal(await db.read('/qubes-firewall-applied/10.137.0.7'), '5 ok 3 rules');
});
