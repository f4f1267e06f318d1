// Leftovers of sessions whose process died without cleaning up (SIGKILL, OOM, power loss of
// the test runner): removed only when the session directory records a pid that is no longer
// that process. Nothing else on the host is touched: only namespaces named `<id>-…` of such a
// session, its mounts below its own directory, and the directory itself.
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type Logger } from '@qubes-net/common';
import { deleteAllLinks } from './link.js';
import { mountsUnder, unmountAll } from './mounts.js';
import { isSessionId } from './names.js';
import { NETNS_RUN_DIR, RUN_DIR } from './paths.js';
import { killNamespaceProcesses, processStartTime } from './procs.js';
import { liveSessionIds } from './registry.js';

export interface StaleSession {
  id: string;
  pid: number;
}

async function readRecord(dir: string): Promise<{ id: string; pid: number; startTime: string } | undefined> {
  try {
    const rec = JSON.parse(await readFile(join(dir, 'session.json'), 'utf8'));
    if (typeof rec?.id !== 'string' || !Number.isInteger(rec?.pid) || typeof rec?.startTime !== 'string') return undefined;
    return rec;
  } catch {
    return undefined;
  }
}

/** Sessions under /run/qubes-net-ns whose recorded process is gone. Directories without a readable record are left alone. */
export async function findStaleSessions(runDir = RUN_DIR): Promise<StaleSession[]> {
  let entries: string[];
  try {
    entries = await readdir(runDir);
  } catch {
    return [];
  }
  const mine = new Set(liveSessionIds());
  const out: StaleSession[] = [];
  for (const id of entries) {
    if (!isSessionId(id) || mine.has(id)) continue;
    const rec = await readRecord(join(runDir, id));
    if (!rec || rec.id !== id) continue;
    const alive = processStartTime(rec.pid);
    if (alive !== undefined && (rec.startTime === '' || alive === rec.startTime)) continue;
    out.push({ id, pid: rec.pid });
  }
  return out;
}

async function removeStaleSession(id: string, runDir: string): Promise<void> {
  const baseDir = join(runDir, id);
  const netnsNames = (await readdir(NETNS_RUN_DIR).catch(() => [] as string[])).filter((n) => n.startsWith(`${id}-`));
  const mntFiles = (await readdir(join(baseDir, 'mnt')).catch(() => [] as string[])).map((n) => join(baseDir, 'mnt', n));
  await killNamespaceProcesses([...netnsNames.map((n) => join(NETNS_RUN_DIR, n)), ...mntFiles]);
  for (const n of netnsNames) {
    await deleteAllLinks(n);
    await run('ip', ['netns', 'del', n], { allowFailure: true });
  }
  await unmountAll(baseDir);
  if (mountsUnder(baseDir).length > 0) throw new Error(`${baseDir} still has mounts`);
  await rm(baseDir, { recursive: true, force: true });
}

/** Removes every stale session; returns the ids removed. */
export async function cleanupStale(opts: { log?: Logger; runDir?: string } = {}): Promise<string[]> {
  const runDir = opts.runDir ?? RUN_DIR;
  const removed: string[] = [];
  for (const s of await findStaleSessions(runDir)) {
    try {
      await removeStaleSession(s.id, runDir);
      removed.push(s.id);
      opts.log?.info({ session: s.id, pid: s.pid }, 'stale session removed');
    } catch (err) {
      opts.log?.error({ session: s.id, pid: s.pid, err: String(err) }, 'stale session cleanup failed');
    }
  }
  return removed;
}

let once: Promise<unknown> | undefined;

/** The first session of a process sweeps leftovers of dead ones; best effort, never throws. */
export function cleanupStaleOnce(log?: Logger): Promise<unknown> {
  once ??= cleanupStale(log ? { log } : {}).catch(() => undefined);
  return once;
}
