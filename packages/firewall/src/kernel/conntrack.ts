// Lists and deletes conntrack entries of one source address (conntrack-tools), through the
// one process runner: a hung conntrack is killed after a timeout instead of stalling the queue.
import { runProcess } from '@qubes-net/common/kernel';
import { parseConntrackList, conntrackDeleteArgs, type Connection } from '../model/conntrack-match.js';
import type { Family } from '../model/skeleton.js';

export interface ConntrackOptions {
  netns?: string;
  timeoutMs?: number;
}

function run(args: string[], opts: ConntrackOptions) {
  return runProcess(['conntrack', ...args], { allowFailure: true, timeoutMs: opts.timeoutMs ?? 10_000, ...(opts.netns ? { netns: opts.netns } : {}) });
}

/** Entries whose original source is `src`, or all of them (an empty table is no error). */
export async function listConnections(family: Family, src?: string, opts: ConntrackOptions = {}): Promise<{ ok: boolean; conns: Connection[]; error?: string }> {
  try {
    const res = await run(['-L', '-f', family === 4 ? 'ipv4' : 'ipv6', ...(src ? ['-s', src] : [])], opts);
    if (res.exitCode !== 0 || res.timedOut) return { ok: false, conns: [], error: res.stderr.trim() };
    return { ok: true, conns: parseConntrackList(family, res.stdout) };
  } catch (e) {
    return { ok: false, conns: [], error: String((e as Error).message) };
  }
}

/** Deletes one entry; an entry already gone (it may have timed out) is not a failure. */
export async function deleteConnection(conn: Connection, opts: ConntrackOptions = {}): Promise<{ ok: boolean; error?: string }> {
  try {
    const res = await run(conntrackDeleteArgs(conn), opts);
    if ((res.exitCode === 0 && !res.timedOut) || /0 flow entries/.test(res.stderr)) return { ok: true };
    return { ok: false, error: res.stderr.trim() };
  } catch (e) {
    return { ok: false, error: String((e as Error).message) };
  }
}
