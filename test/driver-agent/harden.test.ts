// harden-network-interfaces against the real kernel (issue 16.7): the kernel ORs conf/all
// with the interface's value for send_redirects and secure_redirects, so the driver sets
// conf/all as well as the vif's, as upstream's sysctl prefixes (all + the vif) do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { needRoot, isRoot } from '../helpers/root.js';
import { DriverLab, type Client } from './lab.js';

let lab: DriverLab;
let c1: Client;

before(async () => {
  if (!isRoot()) return;
  lab = await DriverLab.create('drv-harden', { keys: { '/qubes-service/harden-network-interfaces': '1' } });
  c1 = await lab.addClient('client1', 41);
});

after(async () => {
  await lab?.destroy();
});

async function sysctl(path: string): Promise<string> {
  return (await lab.netvm.exec('cat', [`/proc/sys/${path}`])).stdout.trim();
}

test('harden-network-interfaces: redirects off on the vif and in conf/all once a vif is online', async (t) => {
  if (!needRoot(t)) return;
  // A fresh namespace starts with the kernel's defaults: conf/all sends redirects.
  assert.equal(await sysctl('net/ipv4/conf/all/send_redirects'), '1');
  await lab.startDaemonReady();
  await lab.online(c1);
  for (const dev of [c1.vif, 'all']) {
    for (const k of ['send_redirects', 'secure_redirects', 'accept_redirects', 'accept_source_route']) {
      assert.equal(await sysctl(`net/ipv4/conf/${dev}/${k}`), '0', `${dev}/${k}`);
    }
    assert.equal(await sysctl(`net/ipv6/conf/${dev}/accept_ra`), '0', `${dev} ipv6 accept_ra`);
  }
});
