// Public surface of @qubes-net/network-agent (for the lab, tests and benches).
export { NetworkAgent, runAgent } from './agent.js';
export { HostedQubesDB } from './qubesdb-host.js';
export { WorkClock } from './work.js';
export { parseOptions, USAGE, type AgentOptions } from './options.js';
export { firewallEnabled } from './firewall-service.js';
export { agentWatchArgs, AGENT_WATCHED_KEYS, type AgentWatchOptions } from './watch-args.js';
