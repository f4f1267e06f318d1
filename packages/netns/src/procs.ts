// Finding and killing the processes that live in a qube. A process belongs to a qube when its
// network or mount namespace is the qube's (compared by namespace inode), so processes a test
// started in the background with exec(), or children of spawned ones, are found as well.
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Inode numbers of namespace files (bind-mounted nsfs files); missing files, and placeholder files whose namespace mount is gone, are skipped. */
export function namespaceInodes(files: readonly string[]): Set<number> {
  const out = new Set<number>();
  const nsfsDev = statSync('/proc/self/ns/net').dev;
  for (const f of files) {
    try {
      const st = statSync(f);
      if (st.dev === nsfsDev) out.add(st.ino);
    } catch {
      // already gone: nothing can be inside it any more
    }
  }
  return out;
}

/** Pids (never our own) whose net or mnt namespace is one of `inodes`. Zombies have no readable ns links and are skipped. */
export function pidsInNamespaces(inodes: ReadonlySet<number>): number[] {
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    for (const kind of ['net', 'mnt']) {
      try {
        const m = /\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/${kind}`));
        if (m && inodes.has(Number(m[1]))) {
          pids.push(pid);
          break;
        }
      } catch {
        break; // exited meanwhile, or a zombie
      }
    }
  }
  return pids;
}

function signal(pids: readonly number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** SIGTERM to everything in the namespaces, SIGKILL to what is left after `graceMs`, then waits until all are gone. */
export async function killNamespaceProcesses(nsFiles: readonly string[], graceMs = 1500): Promise<void> {
  const inodes = namespaceInodes(nsFiles);
  let pids = pidsInNamespaces(inodes);
  if (pids.length === 0) return;
  signal(pids, 'SIGTERM');
  const termDeadline = Date.now() + graceMs;
  while ((pids = pidsInNamespaces(inodes)).length > 0 && Date.now() < termDeadline) await sleep(20);
  for (let round = 0; pids.length > 0 && round < 250; round++) {
    signal(pids, 'SIGKILL');
    await sleep(20);
    pids = pidsInNamespaces(inodes);
  }
}

/** For exit handlers: SIGKILL at once, no waiting (the kernel finishes them). */
export function killNamespaceProcessesSync(nsFiles: readonly string[]): void {
  signal(pidsInNamespaces(namespaceInodes(nsFiles)), 'SIGKILL');
}

/**
 * Start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), undefined if it
 * is gone. A zombie (state Z) counts as gone: it has exited, and on a host whose PID 1 does not
 * reap, it would otherwise keep a dead session's namespaces from ever being cleaned up.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}
