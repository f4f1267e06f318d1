// Purging conntrack entries that must not live on (issue 13.5): those of addresses that
// changed hands (a connection of the address' previous owner must not continue as
// "established" for the new one), and the DNATed DNS flows when the upstream servers change
// (they would keep going to the old server). Entries are deleted by filter (`conntrack -D`),
// never listed: a listing of the whole table is unbounded in size. When the namespace has no
// entries at all (the per-namespace counter is 0) no process runs.
import { runProcess as run } from './process.js';
import { conntrackCount } from './procfs.js';

export const CONNTRACK_TIMEOUT_MS = 5_000;

/** The original-direction source and destination of each `conntrack -L` line (tests, tools). */
export function parseConntrackList(text: string): Array<{ src: string; dst: string }> {
  const out: Array<{ src: string; dst: string }> = [];
  for (const line of text.split('\n')) {
    const src = /\bsrc=(\S+)/.exec(line);
    const dst = /\bdst=(\S+)/.exec(line);
    if (src && dst) out.push({ src: src[1]!, dst: dst[1]! });
  }
  return out;
}

export interface PurgeResult {
  /** Filters that ran (`-s A`, `-d A`). */
  filters: string[];
  errors: string[];
}

async function deleteEntries(flag: '-s' | '-d', addr: string, result: PurgeResult): Promise<void> {
  const family = addr.includes(':') ? 'ipv6' : 'ipv4';
  result.filters.push(`${flag} ${addr}`);
  const res = await run('conntrack', ['-D', '-f', family, flag, addr], { allowFailure: true, timeoutMs: CONNTRACK_TIMEOUT_MS }).catch((e: Error) => ({ exitCode: -1, stderr: e.message, stdout: '' }));
  // conntrack exits 1 when there was nothing to delete; that is success here.
  if (res.exitCode !== 0 && !/0 flow entries have been deleted/.test(res.stderr)) {
    result.errors.push(`conntrack -D ${flag} ${addr}: ${res.stderr.trim() || `exit ${res.exitCode}`}`);
  }
}

/** Entries from or to any of these addresses (original direction). */
export async function purgeConntrack(addrs: readonly string[]): Promise<PurgeResult> {
  const result: PurgeResult = { filters: [], errors: [] };
  if (addrs.length === 0 || conntrackCount() === 0) return result;
  await Promise.all(addrs.flatMap((a) => [deleteEntries('-s', a, result), deleteEntries('-d', a, result)]));
  return result;
}

/** Entries whose original destination is one of the virtual DNS addresses (DNATed queries). */
export async function purgeDnsFlows(virtualDns: readonly string[]): Promise<PurgeResult> {
  const result: PurgeResult = { filters: [], errors: [] };
  if (virtualDns.length === 0 || conntrackCount() === 0) return result;
  await Promise.all(virtualDns.map((a) => deleteEntries('-d', a, result)));
  return result;
}
