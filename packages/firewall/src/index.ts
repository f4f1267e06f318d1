// @qubes-net/firewall: dom0's per-qube firewall rules in nftables.
export {
  firewallSkeleton, addFirewallSkeleton, addFamilySkeleton, addForwardRules, forwardRulesPresent, forwardRuleExprs, firewallTable, qubeChainName, nftFamily,
  FIREWALL_TABLE, DISPATCH_MAP, DNS_SET, FORWARD_CHAIN, FORWARD_PRIORITY, USER_FORWARD_CHAIN, PREROUTING_CHAIN, POSTROUTING_CHAIN, EDGE_PRIORITY, FORWARD_RULE_COMMENT,
} from './model/skeleton.js';
export type { Family } from './model/skeleton.js';
export * from './model/rules.js';
export { parseRule, parseQubeEntries, parseTarget, parseCidr, parseHostname, markerTarget, describeErrors, FIREWALL_PREFIX, type Target } from './model/parse.js';
export { compileQube, ruleText, ruleExpr, addQubeUpdate, addQubeRemoval, addDnsSet, qubeUpdateScript, qubeRemovalScript, dnsSetScript, outcomeSummary, blockAllRules, type CompiledQube, type EffectiveRule, type HostResolution, type Outcome } from './model/compile.js';
export { parseConntrackLine, parseConntrackList, isBlocked, forbiddenConnections, conntrackDeleteArgs, cidrContains, type Connection, type Tuple } from './model/conntrack-match.js';
export { parseResolvConf, type DnsServers } from './model/resolv-conf.js';
export { refreshDelayMs, failedRetryDelayMs, DEFAULT_REFRESH, DEFAULT_FIRST_RETRY_MS, type RefreshBounds } from './model/refresh.js';
export { NameCache } from './name-cache.js';
export { staleObjectsScript, addStaleRemoval } from './model/reconcile.js';
export { FirewallEngine, WATCH_PATHS, type KernelPort, type EngineOptions, type EngineStatus } from './engine.js';
export { HANDLED_PREFIX, APPLIED_PREFIX, DNS_PREFIX, MAX_PATH, dnsFeedbackValue, writeApplyFeedback } from './feedback.js';
export { runHooks, listHooks, DEFAULT_HOOK_PATHS, DEFAULT_HOOK_WAIT_MS, type HookPaths } from './hooks.js';
export { resolveHost, readResolvConf, DEFAULT_RESOLVE, type ResolveOptions } from './kernel/dns.js';
export { realKernel } from './kernel/port.js';
export { readFamilyState, firewallNftWriter } from './kernel/nft.js';
export { ensureFirewallTables, firewallTablesTransaction } from './kernel/tables.js';
export { renderQube } from './render.js';
export { collectStatus, formatStatus } from './status.js';
export { runDaemon, defaultDaemonOptions, watchResolvConf, DEFAULT_PIDFILE, DEFAULT_STATUS_FILE } from './daemon.js';
export { openOffLoopQubesDB } from './qubesdb-offloop.js';
export { createDesktopNotifier, alertText, DEFAULT_USER_KEY, type Alert, type AlertSink, type DesktopNotifier, type DesktopNotifierOptions } from './notify.js';
