// The driver daemon as the driver benches run it inside the netvm qube: started with the given
// NODE_OPTIONS, resolved once it logs "driver ready"; stopped with SIGTERM.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Qube } from '@qubes-net/netns';
import type { startQubesDB as StartQubesDB } from '../../test/helpers/qubesdb.js';

/** The checkout (this file runs from bench/dist/driver-agent/). */
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/**
 * The hotplug client talks to the network agent's socket by default; these benches measure the
 * driver daemon on its own, so the client is pointed at the driver's socket.
 */
export const DRIVER_SOCKET = '/run/qubes-net/driver.sock';

export async function startDriverDaemon(netvm: Qube, cli: string, nodeOptions: string): Promise<ChildProcess> {
  const child = netvm.spawn(process.execPath, [cli, 'run', '--no-firewall'], { env: { NODE_OPTIONS: nodeOptions }, stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.includes('"driver ready"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`driver exited ${code}: ${netvm.outputOf(child).stderr}`)));
  });
  return child;
}

export async function stopDriverDaemon(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}

/** Xen's backend path of a client domain's vif in the netvm (domid 1 in these benches). */
export const vifXenbus = (domid: number) => `/local/domain/1/backend/vif/${domid}/0`;

/**
 * The netvm as the driver benches need it: a vif per domid whose far end lives in CLIENTS (as
 * frontends live in other domains), Xen's backend entries for each, the qube's resolv.conf and a
 * QubesDB daemon with dom0's provider keys. Loaded lazily: the benches' `--inner` processes
 * import this file for its constants only.
 */
export async function prepareNetvm(netvm: Qube, clients: Qube, domids: readonly number[], opts: { ipv4For: (domid: number) => string; mac: string; gateway: string; gateway6: string }) {
  const { ipBatch } = await import('@qubes-net/common');
  const { openQubesDB } = await import('@qubes-net/qubesdb');
  const { startQubesDB } = (await import(join(REPO_ROOT, 'test', 'dist', 'helpers', 'qubesdb.js'))) as { startQubesDB: typeof StartQubesDB };
  const links = domids.map((d) => `link add vif${d}.0 address fe:ff:ff:ff:ff:ff type veth peer name pv${d} netns ${clients.netns}`);
  // ip -batch in slices: one batch of thousands of veth pairs is slower than a few smaller ones.
  for (let i = 0; i < links.length; i += 2000) {
    const res = await ipBatch(links.slice(i, i + 2000), { netns: netvm.netns });
    if (!res.ok) throw new Error(`creating vifs: ${res.stderr.slice(0, 500)}`);
  }
  const up = await ipBatch(domids.map((d) => `link set pv${d} up`), { netns: clients.netns });
  if (!up.ok) throw new Error(`peers up: ${up.stderr.slice(0, 500)}`);
  await Promise.all(domids.map(async (d) => {
    await netvm.xenstoreWrite(`${vifXenbus(d)}/ip`, `${opts.ipv4For(d)} fd09:24ef:4179::a89:${d.toString(16)}`);
    await netvm.xenstoreWrite(`${vifXenbus(d)}/mac`, opts.mac);
    await netvm.xenstoreWrite(`${vifXenbus(d)}/type`, 'vif');
  }));
  writeFileSync(netvm.hostPath('/etc/resolv.conf'), 'nameserver 198.51.100.53\n');
  const qdb = await startQubesDB({ qube: netvm });
  const db = openQubesDB({ runDir: qdb.runDir });
  for (const [k, v] of Object.entries({
    '/qubes-netvm-network': opts.gateway, '/qubes-netvm-gateway': opts.gateway, '/qubes-netvm-gateway6': opts.gateway6, '/qubes-netvm-netmask': '255.255.255.255',
    '/qubes-netvm-primary-dns': '10.139.1.1', '/qubes-netvm-secondary-dns': '10.139.1.2', '/connected-ips': '', '/connected-ips6': '',
  })) await db.write(k, v);
  return { qdb, db };
}
