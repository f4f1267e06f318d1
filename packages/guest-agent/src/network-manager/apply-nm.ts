// The uplink through NetworkManager (reference §3.4), for a qube with the `network-manager`
// service: NetworkManager owns the addresses, routes, MTU and resolv.conf; we write only what
// upstream writes itself in that case: the interface group, the keyfile "VM uplink <IF>" and
// the permanent neighbours of the gateways.
//
// Never fighting the user: the keyfile is rewritten, loaded and activated only when its content
// changes. An apply woken by anything else (another QubesDB key, a link event) finds the same
// content and leaves NetworkManager alone, so `nmcli device disconnect eth0` stays in force until
// the user's `nmcli connection up "VM uplink eth0"` or until dom0 changes the uplink's values
// (a new address must take effect). A file changed behind our back (`nmcli connection modify`)
// is dom0's connection again on the next apply: the user's own settings belong in a connection
// of their own.
import { unlink } from 'node:fs/promises';
import type { LogLike as Logger } from '@qubes-net/common/line-log';
import type { DesiredUplink } from '../model/desired.js';
import type { KernelState } from '../model/kernel-state.js';
import { planUplink } from '../model/plan.js';
import type { ConfigOutcome } from '../model/read-config.js';
import type { UplinkStatus } from '../model/feedback.js';
import { applyIpBatch, readKernelState } from '../kernel/ip.js';
import { EXIT } from '../exit-codes.js';
import { connectionId, connectionUuid, renderUplinkKeyfile } from './keyfile.js';
import { keyfilePath, readKeyfile, uuidOf, writeKeyfile } from './keyfile-store.js';
import { activateConnection, deleteConnection, loadConnection, networkManagerRunning, type NetworkManagerPaths } from './nmcli.js';

export interface NmApplyInput {
  ifname: string;
  state: KernelState;
  outcome: ConfigOutcome;
  /** The direct path's desired state: its neighbours are the ones upstream adds here too. */
  desired: DesiredUplink;
  ipv6: boolean;
  paths: NetworkManagerPaths;
  log: Logger;
}

export interface NmApplyResult {
  status: UplinkStatus;
  detail: string;
  changed: boolean;
  exitCode: number;
}

/**
 * The `ip -batch` lines for our part: group 1 and the gateways' permanent neighbours, nothing
 * else. The link is not set up (NetworkManager does that, and a user's disconnect may keep it
 * down), no address is removed (NetworkManager's are the same as ours were), and our own
 * routes of the direct path (proto 75), if any are left from before the service was switched
 * on, go: NetworkManager adds its own.
 */
export function nmKernelLines(state: KernelState, desired: DesiredUplink): string[] {
  const ours: DesiredUplink = { ifname: desired.ifname, link: 'up', addresses: [], neighbours: desired.neighbours, routes: [], resolvConf: { action: 'leave', reason: 'NetworkManager writes it' } };
  const dev = `dev ${desired.ifname}`;
  const link = state.links.find((l) => l.ifname === desired.ifname);
  return planUplink(state, ours, undefined).lines
    .filter((l) => !l.startsWith('link set '))
    .concat(link && link.group !== '1' ? [`link set ${dev} group 1`] : []);
}

export async function applyViaNetworkManager(input: NmApplyInput): Promise<NmApplyResult> {
  const { ifname, outcome, log, paths } = input;
  if (outcome.kind === 'invalid') {
    // Nothing written: the connection NetworkManager has stays as it is.
    const first = outcome.issues[0]!;
    return { status: 'error', detail: `${ifname} ${first.key}: ${first.reason}${outcome.issues.length > 1 ? ` (+${outcome.issues.length - 1} more)` : ''}`, changed: false, exitCode: EXIT.invalidConfig };
  }
  if (outcome.kind === 'unconfigured') {
    // Upstream configures nothing without an address; neither do we.
    return { status: 'unconfigured', detail: `${ifname} ${outcome.issue.key} missing`, changed: false, exitCode: EXIT.ok };
  }
  const link = input.state.links.find((l) => l.ifname === ifname);
  const rendered = renderUplinkKeyfile({ ifname, mac: link?.mac ?? '', config: outcome.config, ipv6: input.ipv6 });
  if (!rendered.ok) {
    log.error({ ifname, field: rendered.field, value: rendered.value, reason: rendered.reason }, 'NetworkManager connection refused');
    return { status: 'error', detail: `${ifname} ${rendered.field}: ${rendered.reason}`, changed: false, exitCode: EXIT.invalidConfig };
  }
  const file = keyfilePath(paths.connectionsDir, ifname);
  const uuid = connectionUuid(link!.mac!);
  let changed = false;
  let error: string | undefined;

  // Group first (upstream's order), then the connection, then the neighbours. The first batch
  // is planned with the desired neighbours and drops every neighbour line: planned without
  // them it would delete the gateways' neighbours already in place (any apply after the first,
  // e.g. the watcher's and the uplink unit's after a re-plug) and, the keyfile being unchanged,
  // nothing would put them back.
  const group = nmKernelLines(input.state, input.desired).filter((l) => !l.startsWith('neigh '));
  if (group.length > 0) {
    const r = await applyIpBatch(group);
    changed = true;
    if (!r.ok) error = r.error.split('\n')[0] || 'ip -batch failed';
  }

  let how: 'written' | 'unchanged' = 'unchanged';
  try {
    how = await writeKeyfile(file, paths.connectionsDir, rendered.content);
  } catch (err) {
    error ??= `keyfile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    log.error({ ifname, path: file, error: (err as Error).message }, 'NetworkManager keyfile write failed');
  }
  if (how === 'written') {
    changed = true;
    log.info({ ifname, path: file, connection: connectionId(ifname), uuid }, 'NetworkManager keyfile written');
    if (await networkManagerRunning(paths.procDir)) {
      const load = await loadConnection(paths, file);
      if (!load.ok) log.warn({ ifname, path: file, error: load.error }, 'nmcli connection load failed');
      const up = await activateConnection(paths, uuid);
      if (up.ok) log.info({ ifname, connection: connectionId(ifname) }, 'NetworkManager connection activated');
      else {
        error ??= `nmcli connection up: ${up.error}`;
        log.error({ ifname, connection: connectionId(ifname), error: up.error }, 'nmcli connection up failed');
      }
    } else {
      log.info({ ifname, path: file }, 'NetworkManager not running: it loads the connection when it starts');
    }
  } else {
    log.debug({ ifname, path: file }, 'NetworkManager keyfile unchanged, connection left as the user has it');
  }

  // The neighbours after the activation: a connection going down and up again flushes them
  // with the link's last IPv4 address.
  const state = how === 'written' ? await readKernelState().catch(() => input.state) : input.state;
  const neigh = nmKernelLines(state, input.desired).filter((l) => l.startsWith('neigh '));
  if (neigh.length > 0) {
    const r = await applyIpBatch(neigh);
    changed = true;
    if (!r.ok) error ??= r.error.split('\n')[0] || 'ip -batch failed';
  }

  if (error !== undefined) return { status: 'error', detail: `${ifname} ${error}`, changed, exitCode: EXIT.kernel };
  const c = outcome.config;
  return { status: 'ok', detail: `${ifname} ${c.ip}/${c.prefix}${c.ip6 && input.ipv6 ? ` ${c.ip6}/${c.prefix6}` : ''} via NetworkManager`, changed, exitCode: EXIT.ok };
}

/** `remove`: NetworkManager forgets the connection and its keyfile goes (upstream deletes the file). */
export async function removeNetworkManagerConnection(ifname: string, paths: NetworkManagerPaths, log: Logger): Promise<boolean> {
  const file = keyfilePath(paths.connectionsDir, ifname);
  const content = await readKeyfile(file);
  if (content === undefined) return false;
  const uuid = uuidOf(content);
  if (uuid !== undefined && await networkManagerRunning(paths.procDir)) {
    const r = await deleteConnection(paths, uuid);
    if (!r.ok) log.warn({ ifname, uuid, error: r.error }, 'nmcli connection delete failed');
  }
  await unlink(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') log.error({ ifname, path: file, error: err.message }, 'NetworkManager keyfile removal failed');
  });
  log.info({ ifname, path: file, connection: connectionId(ifname) }, 'NetworkManager connection removed');
  return true;
}

export interface NmStatus {
  keyfile: string;
  /** The keyfile on disk is what QubesDB's values render to. */
  keyfileMatches: boolean;
  /** Our `ip -batch` lines still to run (group, neighbours). */
  pending: string[];
}

/** For `status`: the NetworkManager path's view of "configured as QubesDB says". */
export async function networkManagerStatus(input: Omit<NmApplyInput, 'log'>): Promise<NmStatus> {
  const { ifname, outcome, paths } = input;
  const file = keyfilePath(paths.connectionsDir, ifname);
  const link = input.state.links.find((l) => l.ifname === ifname);
  const rendered = outcome.kind === 'ok' ? renderUplinkKeyfile({ ifname, mac: link?.mac ?? '', config: outcome.config, ipv6: input.ipv6 }) : undefined;
  const onDisk = await readKeyfile(file);
  return {
    keyfile: file,
    keyfileMatches: rendered?.ok === true && onDisk === rendered.content,
    pending: outcome.kind === 'ok' && link ? nmKernelLines(input.state, input.desired) : [],
  };
}
