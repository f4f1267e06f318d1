// The control socket's request parser: strict, never guessing (pure; no socket involved).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseControlRequest, formatControlReply, MAX_CONTROL_REQUEST_BYTES } from '@qubes-net/guest-agent';

test('control requests: the three ops, iface validated', () => {
  assert.deepEqual(parseControlRequest('{"op":"apply","iface":"eth0"}'), { ok: true, request: { op: 'apply', iface: 'eth0' } });
  assert.deepEqual(parseControlRequest('{"op":"apply"}'), { ok: true, request: { op: 'apply' } });
  assert.deepEqual(parseControlRequest(' {"iface":"eth1","op":"remove"} '), { ok: true, request: { op: 'remove', iface: 'eth1' } });
  assert.deepEqual(parseControlRequest('{"op":"status"}'), { ok: true, request: { op: 'status' } });
});

test('control requests: everything else is an error with a reason', () => {
  const bad: [string, RegExp][] = [
    ['', /not JSON/],
    ['apply eth0', /not JSON/],
    ['{"op":"apply","iface":"eth0"', /not JSON/],
    ['[]', /not a JSON object/],
    ['null', /not a JSON object/],
    ['"apply"', /not a JSON object/],
    ['{}', /op missing/],
    ['{"op":7}', /op missing or not a string/],
    ['{"op":"reboot"}', /unknown op/],
    ['{"op":"__proto__"}', /unknown op/],
    ['{"op":"toString"}', /unknown op/],
    ['{"op":"status","iface":"eth0"}', /unexpected field "iface" for status/],
    ['{"op":"apply","iface":"eth0","force":true}', /unexpected field "force"/],
    ['{"op":"remove"}', /remove needs iface/],
    ['{"op":"apply","iface":"-eth0"}', /not an interface name/],
    ['{"op":"apply","iface":"eth0;reboot"}', /not an interface name/],
    ['{"op":"apply","iface":"eth0 up"}', /not an interface name/],
    ['{"op":"apply","iface":"eth0\\nlink set lo down"}', /not an interface name/],
    ['{"op":"apply","iface":"abcdefghijklmnop"}', /not an interface name/],
    ['{"op":"apply","iface":""}', /not an interface name/],
    ['{"op":"apply","iface":["eth0"]}', /not an interface name/],
    ['{"op":"apply","iface":null}', /not an interface name/],
    [`{"op":"apply","iface":"eth0","x":"${'y'.repeat(MAX_CONTROL_REQUEST_BYTES)}"}`, /longer than 1024 bytes/],
  ];
  for (const [line, reason] of bad) {
    const r = parseControlRequest(line);
    assert.equal(r.ok, false, line);
    if (!r.ok) assert.match(r.error, reason, line);
  }
});

test('control replies are exactly one line', () => {
  const line = formatControlReply({ ok: true, result: 'error', detail: 'eth0 a\nb', exitCode: 2 });
  assert.equal(line.indexOf('\n'), line.length - 1);
  assert.deepEqual(JSON.parse(line), { ok: true, result: 'error', detail: 'eth0 a\nb', exitCode: 2 });
});
