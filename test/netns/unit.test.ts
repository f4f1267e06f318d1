// Pure logic of the netns package: names, path mapping, xenstore keys, the DNS codec, the
// fake internet's data. No root needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mapQubePath, sanitizeLabel, isSessionId, isQubeName, xenstoreKeyParts, DEFAULT_HOSTS, encodeQuery, decodeReply, decodeName, encodeName, hostsFile, parseQueryLog, dnsmasqArgs } from '@qubes-net/netns';

test('session labels become short, valid id parts', () => {
  assert.equal(sanitizeLabel('Driver Agent/E2E'), 'driver-agent-e2e');
  assert.equal(sanitizeLabel('a-very-long-label-that-goes-on'), 'a-very-long-labe');
  assert.equal(sanitizeLabel('!!!'), 'test');
  fc.assert(fc.property(fc.string(), (label) => isSessionId(`qn-${sanitizeLabel(label)}-abcdef`)));
  assert.ok(isQubeName('sys-net'));
  assert.ok(!isQubeName('Sys'));
  assert.ok(!isQubeName('a'.repeat(21)));
});

test('mapQubePath maps the private parts and refuses the rest', () => {
  const r = '/run/qubes-net-ns/qn-x-000000/q/vm';
  assert.equal(mapQubePath(r, '/etc/resolv.conf'), `${r}/resolv.conf`);
  assert.equal(mapQubePath(r, '/run'), `${r}/run`);
  assert.equal(mapQubePath(r, '/var/run/qubes/qubesdb.sock'), `${r}/run/qubes/qubesdb.sock`);
  assert.equal(mapQubePath(r, '/run/qubes-service/'), `${r}/run/qubes-service`);
  assert.equal(mapQubePath(r, '/rw/config/rc.local'), `${r}/rw/config/rc.local`);
  assert.equal(mapQubePath(r, '/etc/qubes/protected-files.d'), `${r}/etc-qubes/protected-files.d`);
  for (const bad of ['/etc/passwd', '/runx', '/run/../etc', 'run/x', '/etc/resolv.conf2', '/']) {
    assert.throws(() => mapQubePath(r, bad), Error, bad);
  }
  fc.assert(fc.property(fc.array(fc.stringMatching(/^[a-z.]{1,4}$/), { maxLength: 5 }), (parts) => {
    try {
      return mapQubePath(r, '/run/' + parts.join('/')).startsWith(`${r}/run`);
    } catch {
      return parts.includes('..');
    }
  }));
});

test('xenstore keys: components only, no traversal', () => {
  assert.deepEqual(xenstoreKeyParts('/local/domain/0/backend/vif/12/0/ip'), ['local', 'domain', '0', 'backend', 'vif', '12', '0', 'ip']);
  assert.deepEqual(xenstoreKeyParts('device/vif/0/mac'), ['device', 'vif', '0', 'mac']);
  for (const bad of ['', '/', '..', 'a/../b', 'a//b', 'a/', 'a b', 'a/./b', '.hidden', 'x'.repeat(1025)]) {
    assert.throws(() => xenstoreKeyParts(bad), /invalid xenstore path/, JSON.stringify(bad));
  }
});

test('DNS codec: queries encode, replies decode with compression, garbage is rejected', () => {
  const q = encodeQuery(0x1234, 'www.example.test', 'AAAA');
  assert.equal(q.readUInt16BE(0), 0x1234);
  assert.deepEqual(decodeName(q, 12), ['www.example.test', 12 + 18]);
  // reply: the query with QR set, one AAAA answer pointing back at the question name
  const answer = Buffer.concat([Buffer.from([0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]), Buffer.from('20010db8008000000000000000000080', 'hex')]);
  const reply = Buffer.concat([q, answer]);
  reply.writeUInt16BE(0x8180, 2);
  reply.writeUInt16BE(1, 6);
  const d = decodeReply(reply);
  assert.equal(d.rcode, 'NOERROR');
  assert.deepEqual(d.question, { name: 'www.example.test', type: 'AAAA' });
  assert.deepEqual(d.answers, [{ name: 'www.example.test', type: 'AAAA', ttl: 60, data: '2001:db8:80::80' }]);
  // a pointer loop and truncations fail cleanly
  const loop = Buffer.from(reply);
  loop.writeUInt16BE(0xc000 | 12, 12);
  assert.throws(() => decodeReply(loop));
  fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
    try {
      decodeReply(Buffer.from(bytes));
    } catch (err) {
      assert.ok(err instanceof Error);
    }
  }));
  assert.throws(() => encodeName(`${'a'.repeat(64)}.test`), /invalid DNS name/);
  assert.throws(() => encodeQuery(1, 'x.test', 'BOGUS'), /unknown DNS type/);
});

test('fake internet data: hosts file, dnsmasq arguments, query log parsing', () => {
  const hosts = hostsFile(DEFAULT_HOSTS);
  assert.match(hosts, /^203\.0\.113\.80 www\.example\.test$/m);
  assert.match(hosts, /^2001:db8:80::80 www\.example\.test$/m);
  assert.throws(() => hostsFile([{ name: 'a\nb', addresses: ['203.0.113.1'] }]), /invalid host name/);
  assert.throws(() => hostsFile([{ name: 'ok.test', addresses: ['203.0.113.1 evil'] }]), /invalid address/);
  const args = dnsmasqArgs('198.51.100.53', { hosts: '/h', log: '/l' });
  assert.ok(args.includes('--listen-address=198.51.100.53') && args.includes('--bind-interfaces') && args.includes('--no-resolv'));
  assert.throws(() => dnsmasqArgs('evil', { hosts: '/h', log: '/l' }));
  const log = 'Nov 27 06:46:11 dnsmasq[1]: query[AAAA] www.example.test from 2001:db8:0:1::2\nNov 27 06:46:11 dnsmasq[1]: config www.example.test is NODATA-IPv6\n';
  assert.deepEqual(parseQueryLog(log), [{ type: 'AAAA', name: 'www.example.test', from: '2001:db8:0:1::2' }]);
});
