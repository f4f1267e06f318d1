// The driver daemon as the driver benches run it inside the netvm qube: started with the given
// NODE_OPTIONS, resolved once it logs "driver ready"; stopped with SIGTERM.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Qube } from '@qubes-net/netns';

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
