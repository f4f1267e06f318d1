// The record of addresses this agent added (see model/plan.ts for why addresses need one).
// Kept under /run: it must survive an agent restart, and it goes away with a reboot, exactly
// when the addresses themselves do.
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OwnedRecord } from '../model/plan.js';
import { parseOwnedRecord } from '../model/record-format.js';
import { parseMtuRecord, type MtuRecord } from '../model/mtu.js';

export const DEFAULT_STATE_DIR = '/run/qubes-net';

export function recordPath(stateDir: string, ifname: string): string {
  return join(stateDir, `guest-${ifname}.json`);
}

/** The stored record, or undefined when missing or unreadable (then nothing counts as ours). */
export async function readRecord(stateDir: string, ifname: string): Promise<OwnedRecord | undefined> {
  try {
    return parseOwnedRecord(await readFile(recordPath(stateDir, ifname), 'utf8'));
  } catch {
    return undefined;
  }
}

export async function writeRecord(stateDir: string, record: OwnedRecord): Promise<void> {
  const path = recordPath(stateDir, record.ifname);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(record) + '\n', { mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(stateDir, { recursive: true, mode: 0o755 });
    await writeFile(tmp, JSON.stringify(record) + '\n', { mode: 0o644 });
  }
  await rename(tmp, path);
}

export async function removeRecord(stateDir: string, ifname: string): Promise<void> {
  await unlink(recordPath(stateDir, ifname)).catch(() => undefined);
}

/** The link's original MTU (model/mtu.ts), beside the address record. */
export function mtuRecordPath(stateDir: string, ifname: string): string {
  return join(stateDir, `guest-${ifname}.mtu.json`);
}

export async function readMtuRecord(stateDir: string, ifname: string): Promise<MtuRecord | undefined> {
  return parseMtuRecord(await readFile(mtuRecordPath(stateDir, ifname), 'utf8').catch(() => ''));
}

export async function writeMtuRecord(stateDir: string, ifname: string, rec: MtuRecord): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o755 });
  const path = mtuRecordPath(stateDir, ifname);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(rec) + '\n', { mode: 0o644 });
  await rename(tmp, path);
}

export async function removeMtuRecord(stateDir: string, ifname: string): Promise<void> {
  await unlink(mtuRecordPath(stateDir, ifname)).catch(() => undefined);
}
