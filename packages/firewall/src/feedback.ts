// What the firewall tells dom0 (and the lab's tests) through QubesDB after each apply:
// upstream's counter, our outcome key, and the addresses each dsthost resolved to, in
// upstream's format (tools in the user's qubes parse it to pin names to these addresses).
import { forLog, type Logger } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';

export const HANDLED_PREFIX = '/qubes-firewall-handled/';
export const APPLIED_PREFIX = '/qubes-firewall-applied/';
export const DNS_PREFIX = '/dns/';
/**
 * QubesDB refuses longer paths (63 characters + NUL). Upstream skips the entry, with a log line,
 * once the write fails and the path is over 64 (qubes-issues #9084, its test 702); we skip
 * every path QubesDB cannot hold before trying.
 */
export const MAX_PATH = 63;
/** Keep the value well under QubesDB's 3071-byte limit. */
const MAX_VALUE = 2048;

/** Upstream's counter; undefined or garbage counts as 0. */
export async function readHandledCounter(db: QubesDB, addr: string): Promise<number> {
  const v = await db.read(HANDLED_PREFIX + addr);
  return v !== undefined && /^(0|[1-9]\d{0,14})$/.test(v) ? Number(v) : 0;
}

/**
 * A /dns/<ip>/<host> value as upstream writes it: the text of a Python set of the resolved
 * addresses with their full prefix length, `{'203.0.113.80/32', '203.0.113.81/32'}` (`set()`
 * when there is none). Python prints a set in hash order; ours is sorted, so equal sets give
 * equal text.
 */
export function dnsFeedbackValue(family: 4 | 6, addrs: readonly string[]): string {
  const full = family === 4 ? '/32' : '/128';
  const items = [...new Set(addrs)].sort().map((a) => `'${a}${full}'`);
  return items.length ? `{${items.join(', ')}}` : 'set()';
}

export interface ApplyFeedback {
  addr: string;
  family: 4 | 6;
  generation: number;
  /** `ok …`, `blocked …` or `partial …` */
  summary: string;
  hosts: ReadonlyMap<string, readonly string[]>;
}

/**
 * Writes /dns/<ip>/… (replacing the old set), then the counter, then the outcome last: whoever
 * waits on /qubes-firewall-applied/<ip> finds the rest already there.
 */
export async function writeApplyFeedback(db: QubesDB, log: Logger, fb: ApplyFeedback): Promise<void> {
  await db.rm(`${DNS_PREFIX}${fb.addr}/`);
  for (const [host, addrs] of fb.hosts) {
    const path = `${DNS_PREFIX}${fb.addr}/${host}`;
    if (path.length > MAX_PATH) {
      log.warn({ ip: fb.addr, host: forLog(host), key: forLog(path) }, 'dns feedback skipped: path too long');
      continue;
    }
    await db.write(path, dnsFeedbackValue(fb.family, addrs));
  }
  await db.write(HANDLED_PREFIX + fb.addr, String(fb.generation));
  let value = `${fb.generation} ${fb.summary}`;
  if (value.length > MAX_VALUE) value = value.slice(0, MAX_VALUE - 1) + '…';
  await db.write(APPLIED_PREFIX + fb.addr, value);
}

/** A qube's rules were removed: its outcome and name keys go too (the counter stays). */
export async function clearFeedback(db: QubesDB, addr: string): Promise<void> {
  await db.rm(`${DNS_PREFIX}${addr}/`);
  await db.rm(APPLIED_PREFIX + addr);
}
