// Talking to NetworkManager: whether it is wanted and installed, whether it runs, and the two
// nmcli calls we make. Argument arrays through common's process runner, each with a timeout.
import { constants } from 'node:fs';
import { access, readFile, readdir } from 'node:fs/promises';
import type { QubesDB } from '@qubes-net/qubesdb';
import { runProcess } from '@qubes-net/common/process';
import { serviceFlagSet } from '../kernel/service-flag.js';

export interface NetworkManagerPaths {
  /** Upstream tests exactly this path (`/usr/bin/nmcli`) to choose the NetworkManager path. */
  nmcli: string;
  /** NetworkManager's keyfile directory. */
  connectionsDir: string;
  /** Where to look for a running NetworkManager process. */
  procDir: string;
}

export const DEFAULT_NM_PATHS: NetworkManagerPaths = {
  nmcli: '/usr/bin/nmcli',
  connectionsDir: '/etc/NetworkManager/system-connections',
  procDir: '/proc',
};

export const NM_SERVICE = 'network-manager';
export const NM_SERVICE_KEY = `/qubes-service/${NM_SERVICE}`;

/**
 * nmcli waits for an activation up to this long (a static configuration takes well under a
 * second); the process is killed a little later. Both stay below the uplink unit's 30 s start
 * timeout (packaging's drop-in), so a hanging NetworkManager fails the apply, not the unit.
 */
const NMCLI_WAIT_S = 15;
const NMCLI_TIMEOUT_MS = (NMCLI_WAIT_S + 5) * 1000;

export type NmChoice =
  | { use: true; reason: string }
  | { use: false; reason: string; serviceOn: boolean };

/**
 * Upstream's choice (setup-ip): the `network-manager` service is on and nmcli is installed.
 * The service as elsewhere in this agent: QubesDB's "1"/"0" wins (dom0's change takes effect
 * without a reboot), else the flag file qubes-sysinit made. Whether NetworkManager runs does not
 * matter here: at boot it starts after the uplink unit and reads the keyfile then.
 */
export async function chooseNetworkManager(db: QubesDB, serviceDir: string, paths: NetworkManagerPaths): Promise<NmChoice> {
  const value = await db.read(NM_SERVICE_KEY).catch(() => undefined);
  const serviceOn = value === '1' || ((value === undefined || value === '') && await serviceFlagSet(serviceDir, NM_SERVICE));
  if (!serviceOn) return { use: false, reason: 'network-manager service off', serviceOn };
  try {
    await access(paths.nmcli, constants.X_OK);
  } catch {
    return { use: false, reason: `network-manager service on but ${paths.nmcli} is not installed: configuring the uplink directly`, serviceOn };
  }
  return { use: true, reason: 'network-manager service on and nmcli installed' };
}

/**
 * Whether a NetworkManager process runs in this qube, from /proc (no D-Bus call: one would
 * bus-activate NetworkManager at boot, whose unit is ordered after the uplink unit that is
 * waiting for us).
 */
export async function networkManagerRunning(procDir: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(procDir);
  } catch {
    return false;
  }
  const comms = await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map((pid) => readFile(`${procDir}/${pid}/comm`, 'utf8').catch(() => '')));
  return comms.some((c) => c.trim() === 'NetworkManager');
}

export interface NmcliResult {
  ok: boolean;
  /** The first line of nmcli's error, or '' on success. */
  error: string;
}

async function nmcli(paths: NetworkManagerPaths, args: readonly string[]): Promise<NmcliResult> {
  try {
    const r = await runProcess([paths.nmcli, '--wait', String(NMCLI_WAIT_S), ...args], { timeoutMs: NMCLI_TIMEOUT_MS, allowFailure: true });
    const error = r.exitCode === 0 ? '' : (r.stderr.trim().split('\n')[0] || `exit ${r.exitCode}`);
    return { ok: r.exitCode === 0, error };
  } catch (err) {
    return { ok: false, error: (err as Error).message.split('\n')[0] ?? 'nmcli failed' };
  }
}

/** `nmcli connection load FILE`: NetworkManager (re-)reads one keyfile. */
export function loadConnection(paths: NetworkManagerPaths, file: string): Promise<NmcliResult> {
  return nmcli(paths, ['connection', 'load', file]);
}

/** `nmcli connection up uuid UUID`: (re-)activates it, so changed addresses take effect. */
export function activateConnection(paths: NetworkManagerPaths, uuid: string): Promise<NmcliResult> {
  return nmcli(paths, ['connection', 'up', 'uuid', uuid]);
}

/** `nmcli connection delete uuid UUID`: NetworkManager forgets it (and deletes its file). */
export function deleteConnection(paths: NetworkManagerPaths, uuid: string): Promise<NmcliResult> {
  return nmcli(paths, ['connection', 'delete', 'uuid', uuid]);
}
