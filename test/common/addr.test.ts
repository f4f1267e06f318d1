import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIPv4, parseIPv6, parseNetmask4, parseVifName, parseMac } from '@qubes-net/common';

test('address parsers accept canonical values and reject junk', () => {
  assert.equal(parseIPv4('10.137.0.3'), '10.137.0.3');
  for (const bad of ['010.1.1.1', '1.2.3', '1.2.3.4 ', '-1.2.3.4', '1.2.3.4;rm', '256.1.1.1', 'fd09::1']) assert.equal(parseIPv4(bad), undefined, bad);
  assert.equal(parseIPv6('FD09:24EF:4179:0000::A89:3'), 'fd09:24ef:4179::a89:3');
  assert.equal(parseIPv6('10.1.1.1'), undefined);
  assert.equal(parseNetmask4('255.255.255.255'), 32);
  assert.equal(parseNetmask4('255.255.255.0'), 24);
  assert.equal(parseNetmask4('255.0.255.0'), undefined);
  assert.deepEqual(parseVifName('vif12.0'), { domid: 12, devid: 0 });
  assert.equal(parseVifName('vif32753.0'), undefined);
  assert.equal(parseVifName('vif012.0'), undefined);
  assert.equal(parseMac('00:16:3e:5e:6c:00'), '00:16:3e:5e:6c:00');
  assert.equal(parseMac('00:16:3E:5e:6c:00'), undefined);
});
