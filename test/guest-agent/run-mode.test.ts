// `qubes-net-guest run` inside a namespace qube: it converges after every QubesDB change and
// link event without restarting, and a restart of the agent changes nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ping } from '@qubes-net/netns';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { APPENDIX_A_STATE, GuestLab, type Agent, type EthState } from './harness.js';

let lab: GuestLab;
let agent: Agent | undefined;

before(async () => {
  if (isRoot()) lab = await GuestLab.create('guest-run');
});
after(async () => {
  await agent?.stop();
  await lab?.destroy();
});

async function converge(what: string, want: EthState): Promise<void> {
  let last: EthState | undefined;
  try {
    await waitFor(what, async () => {
      last = await lab.eth0();
      try {
        assert.deepEqual(last, want);
        return true;
      } catch {
        return false;
      }
    });
  } catch (err) {
    assert.deepEqual(last, want, `${(err as Error).message}; agent log tail: ${JSON.stringify(agent?.logs.slice(-5))}`);
  }
}

const V8: EthState = { ...APPENDIX_A_STATE, addresses: ['10.137.0.8/32', 'fd09:24ef:4179::a89:7/128'] };
const V8_NO_IPV6: EthState = { ...V8, addresses: ['10.137.0.8/32'], routes6: [], neighbours: ['10.137.0.3 fe:ff:ff:ff:ff:ff'] };

test('run: configures at start', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeAppendixA();
  agent = lab.startAgent();
  await lab.waitStatus(undefined, (s) => s.status === 'ok', 'first feedback');
  await converge('Appendix A state', APPENDIX_A_STATE);
  assert.equal(await lab.resolvConf(), 'nameserver 10.139.1.1\nnameserver 10.139.1.2\n');
});

test('run: an IP change replaces the address', async (t) => {
  if (!needRoot(t)) return;
  const prev = (await lab.status())?.generation;
  await lab.writeKeys({ '/qubes-ip': '10.137.0.8' });
  await lab.waitStatus(prev, (s) => s.detail.includes('10.137.0.8/32'), 'feedback for the new IP');
  await converge('new IP', V8);
});

test('run: IPv6 switched off and on again', async (t) => {
  if (!needRoot(t)) return;
  await lab.writeKeys({ '/qubes-ip6': undefined, '/qubes-gateway6': undefined });
  await converge('IPv6 off', V8_NO_IPV6);
  await lab.writeKeys({ '/qubes-ip6': 'fd09:24ef:4179::a89:7', '/qubes-gateway6': 'fd09:24ef:4179::a89:3' });
  await converge('IPv6 on', V8);
  assert.equal(await ping(lab.client, 'fd09:24ef:4179::a89:3', { timeoutMs: 5000 }), true);
});

test('run: the uplink removed and added again is configured again', async (t) => {
  if (!needRoot(t)) return;
  const prev = (await lab.status())?.generation;
  await lab.session.unlink(lab.client, 'eth0');
  await lab.waitStatus(prev, (s) => s.status === 'unconfigured' && s.detail === 'eth0 interface missing', 'feedback: interface missing');
  await lab.linkNetvm();
  await converge('re-added link', V8);
  assert.equal(await ping(lab.client, '10.137.0.3', { timeoutMs: 5000 }), true);
});

test('run: a QubesDB daemon restart is survived; the agent follows the values written afterwards', async (t) => {
  if (!needRoot(t)) return;
  await lab.qdb.restart(); // the fresh daemon starts empty, like upstream's
  await lab.writeAppendixA({ '/qubes-ip': '10.137.0.9' });
  await converge('values written after the restart', { ...V8, addresses: ['10.137.0.9/32', 'fd09:24ef:4179::a89:7/128'] });
  await lab.writeKeys({ '/qubes-ip': '10.137.0.8' });
  await converge('back to .8', V8);
  assert.equal(agent!.child.exitCode, null);
});

test('run: restarting the agent changes nothing and keeps traffic flowing', async (t) => {
  if (!needRoot(t)) return;
  await lab.settled();
  const before = await lab.dump();
  assert.equal(await agent!.stop(), 0);
  assert.equal(await lab.dump(), before, 'a stop leaves the configuration in place');
  assert.equal(await ping(lab.client, '10.137.0.3', { timeoutMs: 5000 }), true);
  const prev = (await lab.status())?.generation;
  agent = lab.startAgent();
  await lab.waitStatus(prev, (s) => s.status === 'ok', 'feedback after restart');
  assert.equal(await lab.dump(), before);
  assert.ok(!agent.logs.some((l) => l.msg === 'uplink configured' && l.changed === true), 'the restarted agent had nothing to change');
  assert.ok(agent.logs.some((l) => l.msg === 'uplink already configured'), JSON.stringify(agent.logs.map((l) => l.msg)));
});
