// @qubes-net/netns: throwaway "qubes" (network + mount namespaces) for tests and the lab,
// and a fake internet to put behind them.
export { NetnsSession } from './session.js';
export { Qube, qubePath, type QubeExecOptions, type QubeSpawnOptions } from './qube.js';
export type { LinkOptions } from './link.js';
export { cleanupStale, findStaleSessions, type StaleSession } from './stale.js';
export { BIN_DIR, RUN_DIR, XENSTORE_DIR, mapQubePath } from './paths.js';
export { SESSION_PREFIX, isQubeName, isSessionId, sanitizeLabel } from './names.js';
export { xenstoreKeyParts } from './xenstore.js';
export { pollUntil } from './poll.js';
export { mountPoints } from './mounts.js';
export { FakeInternet, startFakeInternet, type FakeInternetOptions, type ServiceConnection } from './internet.js';
export { INTERNET, DEFAULT_HOSTS, DEFAULT_CNAMES, LONG_NAME, ROOT_BODY, dnsServers, hostsFile, dnsmasqArgs, parseQueryLog, type HostEntry, type DnsLogEntry } from './internet-plan.js';
export { configureUplink, type UplinkConfig } from './uplink.js';
export { dnsQuery, httpGet, ping, tcpHold, TcpHold, type DnsResult, type HttpResult, type TcpHoldEvent } from './probes.js';
export { encodeQuery, decodeReply, encodeName, decodeName, type DnsAnswer, type DnsReply } from './dns-wire.js';
