// Public surface of @qubes-net/guest-agent: the pure model (for the lab and tests), one apply
// pass, the run-mode daemon and the status report. The CLI is cli.ts.
export { KEY, EXACT_KEYS, WATCHED_PATHS, NET_CONFIG_PREFIX } from './model/keys.js';
export { readUplinkKeys, parseUplinkConfig, serviceEnabled, type UplinkKeys, type UplinkConfig, type ConfigIssue, type ConfigOutcome } from './model/read-config.js';
export { chooseUplink, parseIfname, isUplinkCandidate, uplinkDrivers, DEFAULT_UPLINK, DEFAULT_UPLINK_DRIVERS, BACKEND_MAC, type UplinkChoice } from './model/uplink.js';
export { watchArgs, type WatchArgsOptions } from './model/watch-args.js';
export { acquireApplyLock, ApplyLockError, APPLY_LOCK_WAIT_MS } from './kernel/apply-lock.js';
export { desiredUplink, resolvConfContent, DISABLED_DNS_RESOLV_CONF, ipv6Network, type DesiredUplink, type DesiredAddress, type DesiredNeighbour, type DesiredRoute, type ResolvConfIntent } from './model/desired.js';
export { parseKernelState, parseLinks, parseRoutes, parseNeighbours, STATE_READ_COMMANDS, type KernelState, type LinkState, type RouteState, type NeighbourState, type AddressState } from './model/kernel-state.js';
export { planUplink, sameRecord, isOwnedProtocol, OWNER_PROTO, type OwnedRecord, type UplinkPlan, type PlanChange } from './model/plan.js';
export { parseOwnedRecord } from './model/record-format.js';
export { formatUplinkStatus, parseUplinkStatus, generationCounter, type UplinkStatus } from './model/feedback.js';
export { applyOnce, evaluate, runProviderHooks, DEFAULT_PATHS, type AgentPaths, type ApplyContext, type ApplyResult } from './apply.js';
export { GuestDaemon, DaemonStoppingError, type DaemonOptions, type Trigger, type RequestOutcome } from './daemon.js';
export { collectStatus, formatStatusText, type StatusReport } from './status.js';
export { removeUplink, type RemoveResult } from './remove.js';
export { EXIT } from './exit-codes.js';
export { parseLinkEventLine, LinkMonitor, type LinkEvent } from './kernel/link-monitor.js';
export { writeResolvConf, isProtectedFile, isBackupName } from './kernel/resolv-conf.js';
export { resolvedInUse, setLinkDns, DEFAULT_RESOLVED_TOOLS, type ResolvedTools } from './kernel/resolved.js';
export { serviceFlagSet, DEFAULT_SERVICE_DIR } from './kernel/service-flag.js';
export { parseControlRequest, formatReply as formatControlReply, DEFAULT_CONTROL_SOCKET, MAX_REQUEST_BYTES as MAX_CONTROL_REQUEST_BYTES, type ControlRequest } from './control/protocol.js';
export { ControlServer, socketAnswers, type ControlHandler } from './control/server.js';
export { parseMtu, withMtu, mtuLine, mtuTarget, parseMtuRecord, MIN_MTU_IPV4, MIN_MTU_IPV6, type MtuContext, type MtuVerdict, type MtuRecord, type MtuTarget } from './model/mtu.js';
export * from './network-manager/index.js';
