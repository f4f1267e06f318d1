// `/vm-config/net-mtu` (issue 14 part 2): validation (pure), the plan's line, and the real
// kernel: the MTU set in the same apply, an invalid value failing closed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { desiredUplink, mtuLine, mtuTarget, parseKernelState, parseMtu, parseMtuRecord, parseUplinkConfig, planUplink, withMtu } from '@qubes-net/guest-agent';
import { watchArgs } from '@qubes-net/guest-agent/watch-args';
import { needRoot, isRoot } from '../helpers/root.js';
import { APPENDIX_A, OURS } from './fixtures.js';
import { GuestLab } from './harness.js';

const V4 = { ipv6: false, maxMtu: 65535 };
const V6 = { ipv6: true, maxMtu: 65535 };

test('parseMtu: bounds per family and link, strict decimal only, empty = absent', () => {
  assert.deepEqual(parseMtu(undefined, V4), { kind: 'absent' });
  assert.deepEqual(parseMtu('', V4), { kind: 'absent' });
  assert.deepEqual(parseMtu('576', V4), { kind: 'ok', mtu: 576 });
  assert.deepEqual(parseMtu('1400', V6), { kind: 'ok', mtu: 1400 });
  assert.deepEqual(parseMtu('1280', V6), { kind: 'ok', mtu: 1280 });
  assert.deepEqual(parseMtu('9000', { ipv6: false, maxMtu: undefined }), { kind: 'ok', mtu: 9000 });
  for (const [raw, ctx, reason] of [
    ['575', V4, /below the minimum 576/],
    ['1279', V6, /below the minimum 1280 \(IPv6/],
    ['1501', { ipv6: false, maxMtu: 1500 }, /above the uplink's maximum 1500/],
    ['65536', V4, /above/],
    ['01400', V4, /not a decimal/],
    ['1400 ', V4, /not a decimal/],
    ['+1400', V4, /not a decimal/],
    ['0x578', V4, /not a decimal/],
    ['1e3', V4, /not a decimal/],
    ['-1', V4, /not a decimal/],
    ['99999999999999999999', V4, /not a decimal/],
  ] as const) {
    const v = parseMtu(raw, ctx);
    assert.equal(v.kind, 'invalid', raw);
    if (v.kind === 'invalid') {
      assert.equal(v.issue.key, '/vm-config/net-mtu');
      assert.match(v.issue.reason, reason, raw);
    }
  }
});

const keys = (over: Record<string, string> = {}) => new Map(Object.entries({ ...APPENDIX_A, ...over }));

test('withMtu: an ok outcome gains the MTU; a refused value makes the whole outcome invalid (fail closed)', () => {
  const ok = parseUplinkConfig(keys(), '00:16:3e:5e:6c:00');
  const set = withMtu(ok, '1400', V6);
  assert.equal(set.kind === 'ok' && set.config.mtu, 1400);
  const refused = withMtu(ok, '1000', V6);
  assert.equal(refused.kind, 'invalid');
  assert.equal(desiredUplink('eth0', refused, { ipv6: true }).link, 'down');
  // Without IPv6 on the link the IPv4 minimum applies.
  assert.equal(withMtu(ok, '1000', V4).kind, 'ok');
  assert.equal(withMtu(ok, undefined, V6), ok);
});

test('plan: the MTU line comes first, only when the link differs; none without the key', () => {
  const state = parseKernelState(OURS);
  const rec = { ifname: 'eth0', ifindex: 3, addresses: [{ family: 4 as const, local: '10.137.0.7', prefixlen: 32 }, { family: 6 as const, local: 'fd09:24ef:4179::a89:7', prefixlen: 128 }] };
  const desired = (mtu?: string) => desiredUplink('eth0', withMtu(parseUplinkConfig(keys(), '00:16:3e:5e:6c:00'), mtu, V6), { ipv6: true });
  assert.deepEqual(planUplink(state, desired(), rec).lines, []);
  assert.deepEqual(planUplink(state, desired('1500'), rec).lines, []);
  assert.deepEqual(planUplink(state, desired('1400'), rec).lines, ['link set dev eth0 mtu 1400']);
  assert.equal(mtuLine('eth0', 1400, 1400), undefined);
  assert.equal(mtuLine('eth0', 1500, undefined), undefined);
});

test('mtuTarget: the link own MTU is remembered before the first change and put back when the key goes', () => {
  const link = { ifindex: 3, mtu: 1500 };
  assert.deepEqual(mtuTarget(1400, undefined, link), { mtu: 1400, record: { op: 'write', value: { ifindex: 3, original: 1500 } } });
  const rec = { ifindex: 3, original: 1500 };
  assert.deepEqual(mtuTarget(1300, rec, { ifindex: 3, mtu: 1400 }), { mtu: 1300, record: { op: 'keep' } }, 'the first original stays');
  assert.deepEqual(mtuTarget(undefined, rec, { ifindex: 3, mtu: 1400 }), { mtu: 1500, record: { op: 'remove' } });
  assert.deepEqual(mtuTarget(undefined, undefined, link), { record: { op: 'keep' } });
  assert.deepEqual(mtuTarget(undefined, { ifindex: 9, original: 1500 }, link), { record: { op: 'remove' } }, 'another link: stale');
  assert.deepEqual(mtuTarget(1500, undefined, link), { mtu: 1500, record: { op: 'keep' } }, 'already so: nothing to remember');
  assert.deepEqual(parseMtuRecord('{"ifindex":3,"original":1500}'), rec);
  for (const bad of ['', '{', '{"ifindex":0,"original":1500}', '{"ifindex":3,"original":67}', '{"ifindex":3,"original":"1500"}', 'null']) assert.equal(parseMtuRecord(bad), undefined, bad);
});

test('the watcher follows /vm-config/net-mtu', () => {
  const args = watchArgs('eth0', { cli: ['qubes-net-guest'] });
  const i = args.indexOf('/vm-config/net-mtu');
  assert.ok(i > 0 && args[i - 1] === '--qdb', args.join(' '));
});

let lab: GuestLab;
before(async () => {
  if (isRoot()) lab = await GuestLab.create('guest-mtu');
});
after(async () => {
  await lab?.destroy();
});

async function mtuOf(ifname: string): Promise<number> {
  const res = await lab.client.exec('ip', ['-j', 'link', 'show', 'dev', ifname]);
  return (JSON.parse(res.stdout) as { mtu: number }[])[0]!.mtu;
}

test('real kernel: the MTU is set in the same apply; a bad value takes the link down; a good one brings it back', async (t) => {
  if (!needRoot(t)) return;
  await lab.clearKeys();
  await lab.db.rm('/vm-config/');
  await lab.writeAppendixA({ '/vm-config/net-mtu': '1400' });
  const first = await lab.cli(['apply']);
  assert.equal(first.code, 0, first.stdout);
  assert.equal(await mtuOf('eth0'), 1400);
  assert.equal(first.logs.find((l) => l.msg === 'uplink configured')?.mtu, 1400);
  assert.deepEqual((await lab.eth0()).addresses.length > 0, true);

  // IPv6 is configured: 1200 would make the kernel drop IPv6 from the link. Refused, fail closed.
  await lab.writeKeys({ '/vm-config/net-mtu': '1200' });
  const bad = await lab.cli(['apply']);
  assert.notEqual(bad.code, 0, bad.stdout);
  const issue = bad.logs.find((l) => l.msg === 'uplink config invalid');
  assert.equal(issue?.key, '/vm-config/net-mtu', bad.stdout);
  assert.equal((await lab.status())?.status, 'error');
  assert.equal(await mtuOf('eth0'), 1400, 'a refused value is never applied');
  const down = await lab.client.exec('ip', ['-j', 'link', 'show', 'dev', 'eth0']);
  assert.ok(!(JSON.parse(down.stdout) as { flags: string[] }[])[0]!.flags.includes('UP'));

  await lab.writeKeys({ '/vm-config/net-mtu': '1280' });
  const good = await lab.cli(['apply']);
  assert.equal(good.code, 0, good.stdout);
  assert.equal(await mtuOf('eth0'), 1280);
  assert.equal((await lab.status())?.status, 'ok');
  // Above the link's max_mtu (veth: 65535).
  await lab.writeKeys({ '/vm-config/net-mtu': '65536' });
  assert.notEqual((await lab.cli(['apply'])).code, 0);
  // The key removed: the link's own MTU comes back.
  await lab.db.rm('/vm-config/');
  const back = await lab.cli(['apply']);
  assert.equal(back.code, 0, back.stdout);
  assert.equal(await mtuOf('eth0'), 1500);
  const again = await lab.cli(['apply']);
  assert.equal(again.logs.find((l) => l.msg === 'uplink configured')?.changed, false, again.stdout);
});
