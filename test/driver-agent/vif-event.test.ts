// Validation of vif events (pure): every kind of bad input of issue item 7 is rejected with
// an error naming the source, the key and the (shortened) value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateVifEvent, InputError } from '@qubes-net/driver-agent';

const good = { op: 'online', vif: 'vif12.0', ips: ['10.137.0.7', 'fd09:24ef:4179:0000::a89:7'], mac: '00:16:3e:5e:6c:00', type: 'vif', xenbusPath: '/local/domain/2/backend/vif/12/0' };

test('a well-formed online event is accepted and canonicalised', () => {
  const r = validateVifEvent(good);
  assert.ok(r.ok);
  assert.equal(r.spec.vif, 'vif12.0');
  assert.equal(r.spec.domid, 12);
  assert.equal(r.spec.devid, 0);
  assert.deepEqual(r.spec.ipv4, ['10.137.0.7']);
  assert.deepEqual(r.spec.ipv6, ['fd09:24ef:4179::a89:7']);
  assert.equal(r.spec.mac, '00:16:3e:5e:6c:00');
});

test('xenstore\'s space-separated ip string is accepted too, duplicates collapse', () => {
  const r = validateVifEvent({ ...good, ips: '10.137.0.7 10.137.0.7  fd09::7' });
  assert.ok(r.ok);
  assert.deepEqual(r.spec.ipv4, ['10.137.0.7']);
  assert.deepEqual(r.spec.ipv6, ['fd09::7']);
});

test('a vif without addresses needs no MAC (it will send nothing)', () => {
  const r = validateVifEvent({ op: 'online', vif: 'vif3.1', ips: [], mac: '' });
  assert.ok(r.ok);
  assert.deepEqual(r.spec.ipv4, []);
});

test('offline needs only a valid vif name', () => {
  const r = validateVifEvent({ op: 'offline', vif: 'vif7.0' });
  assert.ok(r.ok);
  assert.equal(r.op, 'offline');
});

const badNames = ['', 'eth0', 'vif', 'vif1', 'vif01.0', 'vif1.00', 'vif32753.0', 'vif99999.0', 'vif1.0 ', 'vif1.0;rm -rf /', 'vif-1.0', 'vif1.65536', 'x'.repeat(3000)];
for (const name of badNames) {
  test(`bad vif name ${JSON.stringify(name.slice(0, 20))} is rejected from env vif`, () => {
    const r = validateVifEvent({ ...good, vif: name });
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.error instanceof InputError);
    if (!r.ok) {
      assert.equal(r.error.source, 'env');
      assert.equal(r.error.key, 'vif');
      assert.ok(r.error.value.length <= 100, 'value shortened for logs');
      assert.equal(r.vif, undefined);
    }
  });
}

test('domid 32752 is the largest accepted', () => {
  assert.ok(validateVifEvent({ ...good, vif: 'vif32752.0' }).ok);
});

const badIps: Array<[unknown, string]> = [
  [['10.137.0.256'], 'not an IPv4'],
  [['10.137.0.07'], 'not an IPv4'],
  [['10.137.0.7/32'], 'not an IPv4'],
  [['127.0.0.1'], 'loopback'],
  [['0.0.0.0'], 'unspecified'],
  [['224.0.0.1'], 'multicast'],
  [['255.255.255.255'], 'broadcast'],
  [['10.139.1.1'], 'virtual DNS'],
  [['::1'], 'loopback'],
  [['fe80::1'], 'link-local'],
  [['ff02::1'], 'multicast'],
  [['::ffff:10.0.0.1'], 'IPv4-mapped'],
  [['fd09::7%eth0'], 'not an IPv4'],
  [[7], 'not a string'],
  [{ a: 1 }, 'not a list'],
  [Array(17).fill('10.137.0.7'), 'more than 16'],
  [['10.137.0.7', '$(reboot)'], 'not an IPv4'],
];
for (const [ips, why] of badIps) {
  test(`bad address ${JSON.stringify(ips).slice(0, 40)} is rejected (${why})`, () => {
    const r = validateVifEvent({ ...good, ips });
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.vif, 'vif12.0', 'the vif is named so its failure can be recorded');
      assert.equal(r.error.source, 'xenstore');
      assert.equal(r.error.key, '/local/domain/2/backend/vif/12/0/ip');
      assert.match(r.error.reason, new RegExp(why.replace(/[()]/g, '.')));
    }
  });
}

const badMacs = ['00:16:3E:5E:6C:00', '00:16:3e:5e:6c', '0016.3e5e.6c00', '01:00:5e:00:00:01', '00:16:3e:5e:6c:00\n', 'zz:16:3e:5e:6c:00'];
for (const mac of badMacs) {
  test(`bad MAC ${JSON.stringify(mac)} is rejected`, () => {
    const r = validateVifEvent({ ...good, mac });
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.error.key, '/local/domain/2/backend/vif/12/0/mac');
  });
}

test('a missing MAC is rejected when the vif has addresses', () => {
  const r = validateVifEvent({ ...good, mac: '' });
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.error.reason, /missing/);
});

test('bad type, bad op and bad XENBUS_PATH are rejected', () => {
  const t = validateVifEvent({ ...good, type: 'vif; reboot' });
  assert.ok(!t.ok && t.error.key.endsWith('/type'));
  const o = validateVifEvent({ ...good, op: 'destroy' });
  assert.ok(!o.ok && o.error.key === 'op');
  const x = validateVifEvent({ ...good, xenbusPath: 'relative/path' });
  assert.ok(!x.ok && x.error.key === 'XENBUS_PATH');
});

test('a 3 KB garbage value is shortened in the error', () => {
  const r = validateVifEvent({ ...good, ips: ['A'.repeat(3000)] });
  assert.ok(!r.ok);
  if (!r.ok) {
    assert.ok(r.error.value.length < 120);
    assert.match(r.error.value, /3000 bytes/);
    assert.ok(r.error.message.length < 400);
  }
});
