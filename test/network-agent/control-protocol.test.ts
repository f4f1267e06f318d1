// The control protocol shared by the agent and the C clients: strict request parsing, the
// reply shape, and the generated C header staying in step with the TypeScript source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseRequest, formatReply, parseReply, reply, exitCodeOf, CODES } from '@qubes-net/common/control/protocol';
import { EXIT } from '@qubes-net/common/exit-codes';

const root = join(import.meta.dirname, '..', '..', '..');

test('a vif event from the C client parses, its values kept as strings for the driver to validate', () => {
  const p = parseRequest(JSON.stringify({ op: 'online', vif: 'vif12.0', ips: ['10.137.0.12', 'fd09::c'], mac: '00:16:3e:5e:6c:0c', type: 'vif', xenbusPath: '/local/domain/1/backend/vif/12/0' }));
  assert.deepEqual(p, { ok: true, request: { op: 'online', vif: 'vif12.0', ips: ['10.137.0.12', 'fd09::c'], mac: '00:16:3e:5e:6c:0c', type: 'vif', xenbusPath: '/local/domain/1/backend/vif/12/0' } });
  const s = parseRequest('{"op":"offline","vif":"vif3.0","ips":"10.137.0.3 fd09::3"}');
  assert.ok(s.ok && s.request.op === 'offline' && s.request.ips.length === 2);
});

test('anything unexpected is refused with code bad-request, never guessed at', () => {
  const bad = [
    'not json',
    '[]',
    '{}',
    '{"op":"shutdown"}',
    '{"op":"status","extra":1}',
    '{"op":"online"}',
    '{"op":"online","vif":"vif1.0\\nx"}',
    '{"op":"online","vif":"vif1.0","ips":[1]}',
    '{"op":"online","vif":"vif1.0","ips":"' + '1.2.3.4 '.repeat(40) + '"}',
    '{"op":"online","vif":"vif1.0","xenbusPath":"relative"}',
    '{"op":"sync","reason":"a;\\u0000"}',
    JSON.stringify({ op: 'sync', reason: 'x'.repeat(70_000) }),
  ];
  for (const line of bad) {
    const p = parseRequest(line);
    assert.equal(p.ok, false, line.slice(0, 60));
    if (!p.ok) assert.equal(p.reply.code, 'bad-request');
  }
});

test('replies are one line with ok first, and round-trip', () => {
  const r = reply('kernel-refused', 'nft said no\nreally', { vif: 'vif1.0' });
  const line = formatReply(r);
  assert.equal(line.split('\n').length, 2);
  assert.ok(line.startsWith('{"ok":false,'));
  assert.deepEqual(parseReply(line.trimEnd()), r);
  assert.equal(exitCodeOf(r), EXIT.kernel);
  assert.equal(parseReply('{"ok":true}').code, 'internal');
  assert.equal(parseReply('{"ok":true,"code":"made-up","message":""}').ok, false);
});

test('every reply code maps to an exit code of the shared table', () => {
  const exits = new Set<number>(Object.values(EXIT));
  for (const [code, exit] of Object.entries(CODES)) assert.ok(exits.has(exit), code);
});

test('native-bindings/src/ctl-protocol.h is what scripts/gen-ctl-header.mjs renders', () => {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'gen-ctl-header.mjs'), '--check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
