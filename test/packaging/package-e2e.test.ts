// The agents as a template gets them: builds the RPM, unpacks it into a scratch root, and runs
// the lab's client → sys-firewall → sys-net chain with every agent, the QubesDB daemon, the
// hotplug script and the C hotplug client taken from the unpacked package (not the workspace).
// The client then reaches the fake internet's web server by name (DNS through both providers).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Lab, parseTopology, resolveAgentCommands, upAll } from '@qubes-net/lab';
import { httpGet } from '@qubes-net/netns';
import { createLogger } from '@qubes-net/common';
import { needRoot } from '../helpers/root.js';
import { buildPackages, ROOT, unpackRpm } from './unpacked.js';

let work: string | undefined;
let pkgRoot: string;
let lab: Lab | undefined;

const RUN_ID = randomBytes(3).toString('hex');

before(async () => {
  if (process.getuid?.() !== 0) return; // the test itself reports the skip (or, under CI, fails)
  work = mkdtempSync(join(tmpdir(), 'qubes-net-pkg-e2e-'));
  const built = await buildPackages(join(work, 'out'), 'rpm', true);
  pkgRoot = await unpackRpm(built.rpm!, join(work, 'root'));
});

after(async () => {
  await lab?.destroy().catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a client reaches the internet by name through sys-firewall and sys-net, agents from the package', async (t) => {
  if (!needRoot(t)) return;
  // The packaged hotplug script runs the packaged C client and driver CLI; their installed
  // paths (/usr/lib/qubes-net, /usr/bin) are not there in a scratch root, hence the overrides.
  process.env.QUBES_NET_HOTPLUG = join(pkgRoot, 'usr/lib/qubes-net/native/qubes-net-hotplug');
  // A template has the system's libqubesdb (qubes-db-libs, a dependency, not package content);
  // this machine has none, so the workspace's stand-in plays that part.
  process.env.QUBESDB_LIBRARY = join(ROOT, 'native-bindings/build/libqubesdb.so');
  process.env.QUBES_NET_DRIVER_CLI = join(pkgRoot, 'usr/bin/qubes-net-driver');
  const agents = resolveAgentCommands({ binDir: join(pkgRoot, 'usr/bin'), env: { ...process.env, QUBES_NET_VIF_SCRIPT: join(pkgRoot, 'usr/lib/qubes-net/vif-route-qubes'), QUBES_NET_WATCH: join(pkgRoot, 'usr/lib/qubes-net/native/qubes-net-watch') } });
  for (const argv of [agents.qubesdbDaemon, agents.guest, agents.agent, [agents.watch], agents.vifScript]) {
    assert.ok(argv[0]!.startsWith(pkgRoot), `${argv.join(' ')} comes from the unpacked package`);
  }

  const model = parseTopology(`
name: pk${RUN_ID}
qubes:
  - name: sys-net
    qid: 2
    provides_network: true
    uplink: true
  - name: sys-firewall
    qid: 3
    netvm: sys-net
    provides_network: true
  - name: work
    qid: 7
    netvm: sys-firewall
`, 'package-e2e');
  const stateDir = join(work!, 'lab');
  lab = await Lab.create(model, { agents, stateDir, logger: createLogger('lab', 'warn') });
  try {
    await upAll(lab);
    const res = await httpGet(lab.runningQube('work').ns, 'http://www.example.test/', { timeoutMs: 5000 });
    assert.equal(res.status, 200, `GET http://www.example.test/ from work: ${res.error ?? res.status}`);
  } catch (err) {
    // The agents' own logs say why; the state directory goes away with the test.
    for (const f of readdirSync(stateDir, { recursive: true }).map(String).filter((f) => f.endsWith('.log')).sort()) {
      t.diagnostic(`--- ${f}\n${readFileSync(join(stateDir, f), 'utf8').split('\n').slice(-15).join('\n')}`);
    }
    throw err;
  }
});
