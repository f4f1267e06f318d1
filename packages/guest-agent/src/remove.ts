// `qubes-net-guest remove IFACE` (upstream's `setup-ip remove`): take the link down, so nothing
// leaks once the firewall stops, and take away what this agent configured on it.
import type { LogLike as Logger } from '@qubes-net/common/line-log';
import type { AgentPaths } from './apply.js';
import { planUplink } from './model/plan.js';
import type { DesiredUplink } from './model/desired.js';
import { applyIpBatch, readKernelState } from './kernel/ip.js';
import { readRecord, removeRecord } from './kernel/record.js';
import { removeNetworkManagerConnection } from './network-manager/apply-nm.js';
import { DEFAULT_NM_PATHS } from './network-manager/nmcli.js';

export interface RemoveResult {
  ifname: string;
  present: boolean;
  /** The link's index when it was present (the run mode holds that link down until an apply). */
  ifindex?: number;
  ok: boolean;
  changes: string[];
}

export async function removeUplink(ifname: string, paths: AgentPaths, log: Logger): Promise<RemoveResult> {
  const [state, owned] = await Promise.all([readKernelState(), readRecord(paths.stateDir, ifname)]);
  const nothing: DesiredUplink = { ifname, link: 'down', addresses: [], neighbours: [], routes: [], resolvConf: { action: 'leave', reason: 'removing' } };
  const plan = planUplink(state, nothing, owned);
  const changes = plan.changes.map((c) => `${c.op} ${c.what} ${c.detail}`);
  // Upstream deletes the NetworkManager keyfile whichever path configured the uplink; after the
  // batch, whose lines were planned on the state before NetworkManager drops its addresses.
  const forgetConnection = async (): Promise<void> => {
    if (await removeNetworkManagerConnection(ifname, paths.networkManager ?? DEFAULT_NM_PATHS, log)) changes.push('del connection NetworkManager');
  };
  if (plan.ifindex === undefined) {
    await forgetConnection();
    await removeRecord(paths.stateDir, ifname);
    log.info({ ifname }, 'uplink already gone');
    return { ifname, present: false, ok: true, changes };
  }
  const res = await applyIpBatch(plan.lines);
  await forgetConnection();
  const ifindex = plan.ifindex;
  if (res.ok) {
    await removeRecord(paths.stateDir, ifname);
    log.info({ ifname, changes }, 'uplink removed');
  } else {
    log.error({ ifname, error: res.error, changes }, 'uplink remove failed');
  }
  return { ifname, present: true, ifindex, ok: res.ok, changes };
}
