// Applying dom0's operations through a qube's QubesDB, and waiting on the agents' feedback
// keys (never on time).
import { setTimeout as sleep } from 'node:timers/promises';
import { forLog } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { CLIENT_NETWORK_KEYS, PROVIDER_NETWORK_KEYS, VM_CONFIG_KEYS, type QdbOp } from '../dom0/entries.js';

/** Applies the operations in order (dom0's order matters: the firewall marker comes last). */
export async function applyOps(db: QubesDB, ops: readonly QdbOp[]): Promise<void> {
  for (const op of ops) {
    if (op.op === 'write') await db.write(op.path, op.value);
    else await db.rm(op.path);
  }
}

/** The keys dom0 manages in a qube's own database, as they are now (to diff against). */
export async function readOwnManaged(db: QubesDB): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const key of [...CLIENT_NETWORK_KEYS, ...PROVIDER_NETWORK_KEYS, ...VM_CONFIG_KEYS]) {
    const v = await db.read(key);
    if (v !== undefined) out.set(key, v);
  }
  for (const [k, v] of await db.multiread('/qubes-service/')) out.set(k, v);
  for (const key of ['/name', '/type', '/default-user', '/qubes-vm-type', '/qubes-vm-updateable']) {
    const v = await db.read(key);
    if (v !== undefined) out.set(key, v);
  }
  return out;
}

export class WaitTimeout extends Error {
  constructor(what: string, readonly last: unknown) {
    super(`timed out waiting for ${what}${last !== undefined ? ` (last seen: ${forLog(JSON.stringify(last), 200)})` : ''}`);
    this.name = 'WaitTimeout';
  }
}

/**
 * Polls `check` until it returns something other than undefined/false. The deadline only
 * guards against hangs; `describe` gives the last observation for the error.
 */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined | false>, opts: { timeoutMs?: number; intervalMs?: number; lastSeen?: () => unknown } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let interval = opts.intervalMs ?? 10;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new WaitTimeout(what, opts.lastSeen?.());
    await sleep(interval);
    interval = Math.min(interval * 2, 100);
  }
}

/**
 * Feedback values are `<generation> <state> <detail…>`. Generations are opaque (a counter for
 * the firewall, `<start>-<n>` for the guest agent) and never repeat: "a newer apply" is a
 * generation different from the one seen before the change.
 */
export interface Feedback {
  generation: string;
  state: string;
  detail: string;
}

export function parseFeedback(value: string | undefined): Feedback | undefined {
  if (value === undefined) return undefined;
  const m = /^(\S{1,40}) ([a-z-]+)(?: (.*))?$/s.exec(value);
  if (!m) return undefined;
  return { generation: m[1]!, state: m[2]!, detail: m[3] ?? '' };
}
