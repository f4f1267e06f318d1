// Lists and deletes conntrack entries of one source address (conntrack-tools).
import { run, type RunOptions } from '@qubes-net/common';
import { parseConntrackList, conntrackDeleteArgs, type Connection } from '../model/conntrack-match.js';
import type { Family } from '../model/skeleton.js';

export interface ConntrackOptions {
  netns?: string;
}

function cmd(args: string[], opts: ConntrackOptions): [string, string[]] {
  return opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'conntrack', ...args]] : ['conntrack', args];
}

const RUN: RunOptions = { allowFailure: true, timeoutMs: 10_000 };

/** Entries whose original source is `src`, or all of them (an empty table is no error). */
export async function listConnections(family: Family, src?: string, opts: ConntrackOptions = {}): Promise<{ ok: boolean; conns: Connection[]; error?: string }> {
  const [c, a] = cmd(['-L', '-f', family === 4 ? 'ipv4' : 'ipv6', ...(src ? ['-s', src] : [])], opts);
  const res = await run(c, a, RUN);
  if (res.exitCode !== 0) return { ok: false, conns: [], error: res.stderr.trim() };
  return { ok: true, conns: parseConntrackList(family, res.stdout) };
}

/** Deletes one entry; an entry already gone (it may have timed out) is not a failure. */
export async function deleteConnection(conn: Connection, opts: ConntrackOptions = {}): Promise<{ ok: boolean; error?: string }> {
  const [c, a] = cmd(conntrackDeleteArgs(conn), opts);
  const res = await run(c, a, RUN);
  if (res.exitCode === 0 || /0 flow entries/.test(res.stderr)) return { ok: true };
  return { ok: false, error: res.stderr.trim() };
}
