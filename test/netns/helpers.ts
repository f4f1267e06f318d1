// Shared bits of the netns tests: host-state snapshots and leftovers checks.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { run } from '@qubes-net/common';

/** The host's own links and routes, minus counters that change by themselves. */
export async function hostNetworkSnapshot(): Promise<string> {
  const links = JSON.parse((await run('ip', ['-j', 'link', 'show'])).stdout) as Record<string, unknown>[];
  const routes4 = (await run('ip', ['-j', '-4', 'route', 'show', 'table', 'all'])).stdout;
  const routes6 = (await run('ip', ['-j', '-6', 'route', 'show', 'table', 'all'])).stdout;
  const slim = links.map((l) => ({ ifname: l.ifname, ifindex: l.ifindex, address: l.address, flags: l.flags, master: l.master }));
  return JSON.stringify({ slim, routes4, routes6 });
}

/** Everything on the host that still mentions a session id: netns names, mounts, its directory. */
export function leftovers(sessionId: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync('/run/netns')) if (n.startsWith(sessionId)) out.push(`netns ${n}`);
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (line.includes(sessionId)) out.push(`mount ${line}`);
  if (existsSync(`/run/qubes-net-ns/${sessionId}`)) out.push(`dir /run/qubes-net-ns/${sessionId}`);
  return out;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z');
  } catch {
    return false;
  }
}
