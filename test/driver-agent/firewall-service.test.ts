// The qubes-firewall service with the driver: the firewall's skeleton (forward policy drop)
// comes in the start transaction, or in the turn that follows the service being switched on;
// status reports it from the kernel; forwarding follows it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot, isRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { DriverLab } from './lab.js';

let lab: DriverLab;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-fwsvc');
});

after(async () => {
  await lab?.destroy();
});

const forwardChain = async () => (await lab.netvm.exec('nft', ['list', 'chain', 'ip', 'qubes-firewall', 'forward'], { allowFailure: true })).stdout;

test('service off at start, switched on later: the skeleton follows without a restart; status reads it from the kernel', async (t) => {
  if (!needRoot(t)) return;
  await lab.startDaemonReady();
  assert.equal(await forwardChain(), '', 'no skeleton while the service is off');
  assert.equal((await lab.status()).firewall, false);
  await lab.writeKeys({ '/qubes-service/qubes-firewall': '1' });
  await waitFor('skeleton loaded', async () => /policy drop/.test(await forwardChain()));
  assert.match(await forwardChain(), /priority filter \+ 10/);
  await waitFor('status from the kernel', async () => (await lab.status()).firewall === true);
  assert.equal((await lab.netvm.exec('cat', ['/proc/sys/net/ipv4/ip_forward'])).stdout.trim(), '1');
});

test('service on at start: the skeleton is in the start transaction, a client works behind it', async (t) => {
  if (!needRoot(t)) return;
  await lab.stopDaemon();
  await lab.netvm.exec('nft', ['delete', 'table', 'ip', 'qubes-firewall']);
  await lab.netvm.exec('nft', ['delete', 'table', 'ip6', 'qubes-firewall']);
  await lab.startDaemonReady();
  assert.match(await forwardChain(), /policy drop/);
  const c = await lab.addClient('fwclient', 31);
  await lab.online(c);
  const s = await lab.status();
  assert.equal(s.firewall, true);
  assert.equal(s.kernel.inSync, true, JSON.stringify(s.kernel.differences));
  assert.equal(s.vifs.find((v: { vif: string }) => v.vif === c.vif)?.state, 'online');
});
