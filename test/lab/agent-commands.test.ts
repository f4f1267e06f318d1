import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveAgentCommands, PACKAGES_DIR } from '@qubes-net/lab';

test('agents come from the checkout by default, or from a root or a bin directory', () => {
  const def = resolveAgentCommands({ env: {} });
  assert.equal(def.guest[0], process.execPath);
  assert.ok([`${PACKAGES_DIR}/guest-agent/bundle/qubes-net-guest.cjs`, `${PACKAGES_DIR}/guest-agent/dist/cli.js`].includes(def.guest[1]!), def.guest[1]);
  assert.deepEqual(def.guest.slice(2), []);
  // The agent's esbuild bundle where it was built (scripts/bundle.mjs), as the package runs it.
  assert.equal(def.agent[0], process.execPath);
  assert.ok([`${PACKAGES_DIR}/network-agent/bundle/qubes-net-agent-cached.cjs`, `${PACKAGES_DIR}/network-agent/bundle/qubes-net-agent.cjs`, `${PACKAGES_DIR}/network-agent/dist/cli.js`].includes(def.agent[1]!), def.agent[1]);
  assert.equal(def.agent.length, 2);
  assert.ok(def.watch.endsWith('/qubes-net-watch'));
  assert.deepEqual(def.vifScript, [`${PACKAGES_DIR}/driver-agent/scripts/vif-route-qubes`]);

  const root = resolveAgentCommands({ env: { QUBES_NET_AGENT_ROOT: '/opt/x' } });
  assert.deepEqual(root.agent, [process.execPath, '/opt/x/network-agent/dist/cli.js']);
  assert.deepEqual(root.vifScript, ['/opt/x/driver-agent/scripts/vif-route-qubes']);

  const bin = resolveAgentCommands({ env: { QUBES_NET_AGENT_BINDIR: '/usr/bin', QUBES_NET_VIF_SCRIPT: '/etc/xen/scripts/vif-route-qubes', QUBES_NET_HOTPLUG: '/usr/lib/qubes-net/qubes-net-hotplug' } });
  assert.deepEqual(bin.agent, ['/usr/bin/qubes-net-agent']);
  assert.equal(bin.watch, '/usr/bin/qubes-net-watch');
  assert.deepEqual(bin.qubesdbDaemon, ['/usr/bin/qubes-net-qdb', 'daemon']);
  assert.deepEqual(bin.vifScript, ['/etc/xen/scripts/vif-route-qubes']);
  assert.deepEqual(bin.vifScriptEnv, { QUBES_NET_HOTPLUG: '/usr/lib/qubes-net/qubes-net-hotplug' });
});
