// Purging stale conntrack entries of addresses that changed hands, so that a connection of
// a qube that owned the address before cannot continue as "established" for the new owner.
// Upstream runs `conntrack -D -s A` and `-D -d A` per address (two processes each). Here the
// common case costs nothing: when the namespace has no conntrack entries at all (the
// per-namespace counter is 0) there is nothing to purge; otherwise one listing per address
// family finds which of the addresses have entries, and only those are deleted.
import { runProcess as run } from './process.js';
import { conntrackCount } from './procfs.js';

/** The original-direction source and destination of each `conntrack -L` line. */
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
  listed: number;
  deleted: string[];
  errors: string[];
}

async function deleteEntries(flag: '-s' | '-d', addr: string, family: 'ipv4' | 'ipv6', errors: string[]): Promise<void> {
  const res = await run('conntrack', ['-D', '-f', family, flag, addr], { allowFailure: true });
  // conntrack exits 1 when there was nothing (left) to delete; that is success here.
  if (res.exitCode !== 0 && !/0 flow entries have been deleted/.test(res.stderr)) {
    errors.push(`conntrack -D ${flag} ${addr}: ${res.stderr.trim()}`);
  }
}

export async function purgeConntrack(addrs: readonly string[]): Promise<PurgeResult> {
  const result: PurgeResult = { listed: 0, deleted: [], errors: [] };
  if (addrs.length === 0 || conntrackCount() === 0) return result;
  const jobs: Promise<void>[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const wanted = new Set(addrs.filter((a) => a.includes(':') === (family === 'ipv6')));
    if (wanted.size === 0) continue;
    const listing = await run('conntrack', ['-L', '-f', family], { allowFailure: true });
    if (listing.exitCode !== 0) {
      result.errors.push(`conntrack -L -f ${family}: ${listing.stderr.trim()}`);
      continue;
    }
    const entries = parseConntrackList(listing.stdout);
    result.listed += entries.length;
    const bySrc = new Set(entries.map((e) => e.src));
    const byDst = new Set(entries.map((e) => e.dst));
    for (const a of wanted) {
      if (bySrc.has(a)) jobs.push(deleteEntries('-s', a, family, result.errors));
      if (byDst.has(a)) jobs.push(deleteEntries('-d', a, family, result.errors));
      if (bySrc.has(a) || byDst.has(a)) result.deleted.push(a);
    }
  }
  await Promise.all(jobs);
  return result;
}
