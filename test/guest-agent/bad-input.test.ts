// Item 5 of the issue: every bad QubesDB value is logged with its key and (shortened) value,
// the uplink is left without an address and down, the agent keeps running, and it recovers by
// itself once the value is corrected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { forLog } from '@qubes-net/common';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { APPENDIX_A_STATE, GuestLab, type Agent, type LogLine } from './harness.js';
import { APPENDIX_A } from './fixtures.js';

let lab: GuestLab;
let agent: Agent | undefined;

before(async () => {
  if (isRoot()) lab = await GuestLab.create('guest-bad');
});
after(async () => {
  await agent?.stop();
  await lab?.destroy();
});

const KB3 = 'x'.repeat(3000);
/** key → bad values: garbage, IPv6 where IPv4 belongs, leading '-', shell metacharacters, 3 KB. */
const CASES: [string, (string | undefined)[]][] = [
  ['/qubes-ip', ['garbage', 'fd09:24ef:4179::a89:7', '-10.137.0.7', '10.137.0.7;reboot', '$(reboot)', '10.137.0.7\nreboot', KB3, undefined]],
  ['/qubes-netmask', ['garbage', 'ffff:ffff::', '-32', '32 && reboot', KB3]],
  ['/qubes-gateway', ['garbage', 'fd09:24ef:4179::a89:3', '-10.137.0.3', '10.137.0.3|reboot', KB3, undefined]],
  ['/qubes-primary-dns', ['garbage', 'fd09::1', '-10.139.1.1', '`reboot`', KB3]],
  ['/qubes-secondary-dns', ['garbage', 'fd09::2', '-10.139.1.2', '10.139.1.2 >/etc/passwd', KB3]],
];

async function expectFailClosed(what: string): Promise<void> {
  const s = await waitFor(`${what}: uplink without address and down`, async () => {
    const e = await lab.eth0();
    return e.addresses.length === 0 && !e.up && e.routes4.length === 0 && e.neighbours.length === 0 ? e : undefined;
  });
  assert.deepEqual(s.routes6, []);
}

test('apply with a bad value exits 2, logs key and value, leaves nothing configured', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  await lab.writeKeys({ '/qubes-gateway': '10.137.0.3; rm -rf /' });
  const res = await lab.cli(['apply']);
  assert.equal(res.code, 2, res.stdout);
  const err = res.logs.find((l) => l.level === 50 && l.key === '/qubes-gateway');
  assert.ok(err, res.stdout);
  assert.equal(err.value, '10.137.0.3; rm -rf /');
  assert.equal(err.msg, 'uplink config invalid');
  await expectFailClosed('apply');
  assert.match((await lab.status())!.detail, /^eth0 \/qubes-gateway: gateway is not an IPv4 address$/);
  assert.equal((await lab.cli(['status'])).code, 1);
  await lab.writeAppendixA();
  assert.equal((await lab.cli(['apply'])).code, 0);
  assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE);
});

test('run mode: every bad value fails closed, is logged, and the agent recovers when corrected', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeAppendixA();
  agent = lab.startAgent();
  await lab.waitStatus(undefined, (s) => s.status === 'ok', 'first ok');
  for (const [key, values] of CASES) {
    for (const value of values) {
      const label = `${key} = ${value === undefined ? '(missing)' : JSON.stringify(forLog(value, 30))}`;
      const prev = (await lab.status())?.generation;
      const logsBefore: number = agent.logs.length;
      await lab.writeKeys({ [key]: value });
      const st = await lab.waitStatus(prev, (s) => s.status !== 'ok' && s.detail.includes(key), `${label}: feedback`);
      assert.equal(st.status, value === undefined && key === '/qubes-ip' ? 'unconfigured' : 'error', label);
      await expectFailClosed(label);
      const logged: LogLine[] = agent.logs.slice(logsBefore).filter((l) => l.level === 50 && l.key === key);
      assert.ok(logged.length >= 1, `${label}: an error log naming the key`);
      if (value !== undefined) assert.equal(logged[0]!.value, forLog(value), `${label}: the value, shortened`);
      assert.ok(logged.length <= 4, `${label}: no busy loop (${logged.length} error lines)`);
      assert.ok(!agent.logs.slice(logsBefore).some((l) => JSON.stringify(l).length > 2000), `${label}: no log line carries the whole value`);
      // Correct it: the agent recovers by itself.
      const prevBad = (await lab.status())?.generation;
      await lab.writeKeys({ [key]: APPENDIX_A[key] });
      await lab.waitStatus(prevBad, (s) => s.status === 'ok', `${label}: recovered`);
      assert.deepEqual(await lab.eth0(), APPENDIX_A_STATE, `${label}: configured again`);
    }
  }
  assert.equal(agent.child.exitCode, null, 'the agent is still running');
});
