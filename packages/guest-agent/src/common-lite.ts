// Cheap access to @qubes-net/common for the hot path. The package index also loads execa,
// koffi and pino at import time (about 100 ms of startup here), while `qubes-net-guest apply`
// must be done in about the time upstream's shell script takes. So the parsers are loaded from
// common's own addr.js module, next to its index, and the logger module only when wanted.
// Types still come from the package itself, so a signature change there breaks our build.
// (Once common exports subpaths, e.g. "@qubes-net/common/addr", this file becomes plain imports.)
import type * as Common from '@qubes-net/common';

const commonIndex = import.meta.resolve('@qubes-net/common');

type AddrModule = Pick<typeof Common, 'parseIPv4' | 'parseIPv6' | 'parseNetmask4' | 'parsePrefix6' | 'parseMac' | 'forLog' | 'ipv6Groups' | 'canonicalIPv6' | 'GATEWAY_MAC'>;
type LogModule = Pick<typeof Common, 'createLogger' | 'silentLogger'>;

export const addr: AddrModule = await import(new URL('./addr.js', commonIndex).href);

let logModule: Promise<LogModule> | undefined;
/** The logger module (pino), imported once; callers may start this early to overlap the load. */
export function loadLogModule(): Promise<LogModule> {
  logModule ??= import(new URL('./log.js', commonIndex).href) as Promise<LogModule>;
  return logModule;
}

export type { Logger } from '@qubes-net/common';
