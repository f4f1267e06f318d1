// Small pure parts: link-event lines, the feedback value, and the resolv.conf writer (on files
// in a temporary directory; no kernel involved).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, lstatSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatUplinkStatus, generationCounter, isBackupName, isProtectedFile, parseLinkEventLine, parseUplinkStatus, writeResolvConf } from '@qubes-net/guest-agent';

test('ip -o monitor link lines', () => {
  assert.deepEqual(parseLinkEventLine('3: eth0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group 1 \\    link/ether 00:16:3e:5e:6c:00 brd ff:ff:ff:ff:ff:ff link-netns x'),
    { deleted: false, ifindex: 3, ifname: 'eth0', mac: '00:16:3e:5e:6c:00' });
  assert.deepEqual(parseLinkEventLine('Deleted 3: eth0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN group default \\    link/ether 00:16:3e:5e:6c:00 brd ff:ff:ff:ff:ff:ff'),
    { deleted: true, ifindex: 3, ifname: 'eth0', mac: '00:16:3e:5e:6c:00' });
  assert.deepEqual(parseLinkEventLine('12: vif12.0: <NO-CARRIER> mtu 1500'), { deleted: false, ifindex: 12, ifname: 'vif12.0', mac: undefined });
  assert.equal(parseLinkEventLine('garbage'), undefined);
});

test('feedback value: generation, status, one clean line', () => {
  const next = generationCounter(1_000_000);
  const a = next(), b = next();
  assert.notEqual(a, b);
  const v = formatUplinkStatus(a, 'error', 'eth0 /qubes-ip: bad\nvalue\u0000');
  assert.equal(v, `${a} error eth0 /qubes-ip: bad?value?`);
  assert.deepEqual(parseUplinkStatus(v), { generation: a, status: 'error', detail: 'eth0 /qubes-ip: bad?value?' });
  assert.equal(formatUplinkStatus(b, 'ok', 'x'.repeat(500)).length, b.length + 4 + 200);
});

function tmp(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'qn-guest-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('resolv.conf: created, left unchanged when right, symlink replaced by a file', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'resolv.conf');
  assert.equal(await writeResolvConf(path, 'nameserver 10.139.1.1\n'), 'written');
  assert.equal(readFileSync(path, 'utf8'), 'nameserver 10.139.1.1\n');
  assert.equal(statSync(path).mode & 0o777, 0o644);
  assert.equal(await writeResolvConf(path, 'nameserver 10.139.1.1\n'), 'unchanged');
  rmSync(path);
  writeFileSync(join(dir, 'stub-resolv.conf'), 'nameserver 127.0.0.53\n');
  symlinkSync(join(dir, 'stub-resolv.conf'), path);
  assert.equal(await writeResolvConf(path, 'nameserver 10.139.1.1\n'), 'replaced-symlink');
  assert.ok(lstatSync(path).isFile());
  assert.equal(readFileSync(join(dir, 'stub-resolv.conf'), 'utf8'), 'nameserver 127.0.0.53\n', 'the symlink target is not written through');
});

test('protected files: exact lines in either directory', async (t) => {
  const dir = tmp(t);
  const etc = join(dir, 'etc-qubes'), rw = join(dir, 'rw');
  mkdirSync(etc);
  mkdirSync(rw);
  writeFileSync(join(etc, 'a.conf'), '/etc/resolv.conf.bak\n /etc/resolv.conf\n');
  assert.deepEqual(await isProtectedFile('/etc/resolv.conf', [etc, rw, join(dir, 'missing')]), { protected: false });
  writeFileSync(join(rw, 'dns.conf'), '/etc/hosts\n/etc/resolv.conf\n');
  assert.deepEqual(await isProtectedFile('/etc/resolv.conf', [etc, rw]), { protected: true, listedIn: join(rw, 'dns.conf') });
});

test('protected files: subfolders searched, package-manager and editor backups skipped, inner symlinks not followed', async (t) => {
  const dir = tmp(t);
  const etc = join(dir, 'etc-qubes');
  mkdirSync(join(etc, 'sub', 'deeper'), { recursive: true });
  // Backups of a list that did protect the file once: not lists any more.
  for (const name of ['dns.conf.rpmsave', 'dns.conf.rpmnew', 'dns.conf.rpmold', 'dns.conf~', 'dns.conf.dpkg-old', 'dns.conf.dpkg-dist', 'dns.conf.dpkg-new', '.dns.conf.swp']) {
    writeFileSync(join(etc, name), '/etc/resolv.conf\n');
  }
  const outside = join(dir, 'outside.conf');
  writeFileSync(outside, '/etc/resolv.conf\n');
  symlinkSync(outside, join(etc, 'linked.conf'));
  assert.deepEqual(await isProtectedFile('/etc/resolv.conf', [etc]), { protected: false });
  // A list in a subfolder, without a trailing newline, counts.
  writeFileSync(join(etc, 'sub', 'deeper', 'network'), '/etc/hosts\n/etc/resolv.conf');
  assert.deepEqual(await isProtectedFile('/etc/resolv.conf', [etc]), { protected: true, listedIn: join(etc, 'sub', 'deeper', 'network') });
  // The directory named itself may be a symlink (grep follows what it is given).
  symlinkSync(etc, join(dir, 'etc-link'));
  assert.equal((await isProtectedFile('/etc/resolv.conf', [join(dir, 'etc-link')])).protected, true);
});

test('protected files: which names are backups', () => {
  for (const n of ['a.rpmsave', 'a.rpmnew', 'a.rpmold', 'a~', 'a.dpkg-old', 'a.dpkg-bak', 'a.dpkg-tmp', '.a.swp', '.a.swo']) assert.equal(isBackupName(n), true, n);
  for (const n of ['dns.conf', 'rpmnew', 'a.rpm', 'a.dpkg', 'swp', 'a.conf.d']) assert.equal(isBackupName(n), false, n);
});
