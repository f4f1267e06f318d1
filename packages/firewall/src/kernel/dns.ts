// Name resolution for dsthost rules: the system resolver (getaddrinfo, as upstream: nsswitch,
// /etc/hosts, a local resolver), under a hard time limit, plus the TTL from this VM's own
// resolvers (resolv.conf) so the daemon knows when to ask again.
import { promises as dnsPromises } from 'node:dns';
import { readFile } from 'node:fs/promises';
import { parseIPv4, parseIPv6, forLog } from '@qubes-net/common';
import { parseResolvConf, type DnsServers } from '../model/resolv-conf.js';
import type { HostResolution } from '../model/compile.js';
import type { Family } from '../model/skeleton.js';

export async function readResolvConf(path: string): Promise<{ servers: DnsServers; error?: string }> {
  try {
    return { servers: parseResolvConf(await readFile(path, 'utf8')) };
  } catch (e) {
    return { servers: { v4: [], v6: [] }, error: forLog((e as Error).message) };
  }
}

export interface ResolveOptions {
  timeoutMs: number;
  tries: number;
  /**
   * 'system' (default): the addresses come from getaddrinfo, like upstream's, so nsswitch,
   * /etc/hosts and a local resolver apply; the TTL comes from asking resolv.conf's servers
   * directly, where they answer. 'direct': both from resolv.conf's servers only.
   */
  via?: 'system' | 'direct';
  /** For tests: getaddrinfo's stand-in. */
  lookup?: (host: string, family: 0 | 4 | 6) => Promise<{ address: string; family: number }[]>;
}

export const DEFAULT_RESOLVE: ResolveOptions = { timeoutMs: 2_000, tries: 2 };

const ERROR_TEXT: Record<string, string> = {
  ENOTFOUND: 'no such name',
  ETIMEOUT: 'timeout',
  ECANCELLED: 'timeout',
  ESERVFAIL: 'server failure',
  EREFUSED: 'query refused',
  ECONNREFUSED: 'connection refused',
  EAI_AGAIN: 'temporary failure',
  EAI_FAIL: 'server failure',
};

/** TTL used for a name that exists without addresses of the asked family. */
const NODATA_TTL_SECONDS = 300;
/** TTL used when the system resolver answered but no DNS server gave a TTL (/etc/hosts). */
const SYSTEM_TTL_SECONDS = 300;

// getaddrinfo runs on libuv's thread pool (4 threads, shared with file I/O) and cannot be
// cancelled: at most two at once, so slow DNS never starves the rest of the process.
const MAX_SYSTEM_LOOKUPS = 2;
let systemLookups = 0;
const lookupWaiters: (() => void)[] = [];

async function limitedLookup<T>(fn: () => Promise<T>): Promise<T> {
  while (systemLookups >= MAX_SYSTEM_LOOKUPS) await new Promise<void>((r) => lookupWaiters.push(r));
  systemLookups++;
  try {
    return await fn();
  } finally {
    systemLookups--;
    lookupWaiters.shift()?.();
  }
}

const systemLookup = (host: string, family: 0 | 4 | 6) => dnsPromises.lookup(host, { family, all: true, verbatim: true });

/** Races `p` against the lookup's overall time limit; the loser is left to finish alone. */
async function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(onTimeout()), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves `host` for `family`. Never rejects: a failure is a value. A name that exists but has
 * no address of this family resolves to an empty list (its rule then matches nothing); a name
 * that does not exist, a timeout or a server failure does not resolve.
 */
export async function resolveHost(host: string, family: Family, servers: readonly string[], opts: ResolveOptions = DEFAULT_RESOLVE): Promise<HostResolution> {
  const literal = parseIPv4(host) ?? parseIPv6(host);
  if (literal) return { ok: true, addrs: (family === 4 ? parseIPv4(host) : parseIPv6(host)) ? [literal] : [], ttlSeconds: 86_400 };
  if (opts.via === 'direct') return queryServers(host, family, servers, opts);
  const deadline = opts.timeoutMs * opts.tries + 500;
  const lookup = opts.lookup ?? systemLookup;
  // The TTL query runs alongside: it adds no latency, and its failure only costs the TTL.
  const ttlQuery = servers.length ? queryServers(host, family, servers, opts) : Promise.resolve(undefined);
  const addrs = await new Promise<HostResolution>((settle) => {
    // The time limit starts once a lookup slot is ours; the slot is held until getaddrinfo
    // really returns (its thread stays busy until then), the caller is answered at the limit.
    void limitedLookup(async () => {
      const timer = setTimeout(() => settle({ ok: false, error: 'timeout' }), deadline);
      try {
        settle(await systemResolve(host, family, lookup));
      } finally {
        clearTimeout(timer);
      }
    });
  });
  if (!addrs.ok) return addrs;
  // A DNS server slower than the system's answer costs at most a second, and only the TTL.
  const ttl = await withDeadline(ttlQuery, 1_000, () => undefined);
  return ttl?.ok && ttl.addrs.length ? { ...addrs, ttlSeconds: ttl.ttlSeconds } : addrs;
}

async function systemResolve(host: string, family: Family, lookup: NonNullable<ResolveOptions['lookup']>): Promise<HostResolution> {
  try {
    const found = await lookup(host, family);
    const parse = family === 4 ? parseIPv4 : parseIPv6;
    return { ok: true, addrs: [...new Set(found.filter((a) => a.family === family).map((a) => parse(a.address)).filter((a): a is string => !!a))], ttlSeconds: SYSTEM_TTL_SECONDS };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (code === 'ENOTFOUND' || code === 'ENODATA') {
      // getaddrinfo says the same for "no such name" and "no address of this family": the
      // name exists when it has an address of any family.
      const any = await lookup(host, 0).catch(() => []);
      if (any.length) return { ok: true, addrs: [], ttlSeconds: NODATA_TTL_SECONDS };
    }
    return { ok: false, error: ERROR_TEXT[code] ?? forLog(code || (e as Error).message) };
  }
}

/** Asks `servers` directly (c-ares), with the answer's TTL. */
async function queryServers(host: string, family: Family, servers: readonly string[], opts: ResolveOptions): Promise<HostResolution> {
  if (servers.length === 0) return { ok: false, error: 'no nameserver in resolv.conf' };
  const resolver = new dnsPromises.Resolver({ timeout: opts.timeoutMs, tries: opts.tries });
  try {
    resolver.setServers([...servers]);
  } catch (e) {
    return { ok: false, error: `bad nameserver list: ${forLog((e as Error).message)}` };
  }
  const query = (async (): Promise<HostResolution> => {
    try {
      const records = family === 4 ? await resolver.resolve4(host, { ttl: true }) : await resolver.resolve6(host, { ttl: true });
      const addrs = records.map((r) => (family === 4 ? parseIPv4(r.address) : parseIPv6(r.address))).filter((a): a is string => !!a);
      const ttl = records.length ? Math.min(...records.map((r) => r.ttl)) : NODATA_TTL_SECONDS;
      return { ok: true, addrs, ttlSeconds: ttl };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENODATA') return { ok: true, addrs: [], ttlSeconds: NODATA_TTL_SECONDS };
      return { ok: false, error: ERROR_TEXT[code ?? ''] ?? forLog(code ?? (e as Error).message) };
    }
  })();
  // c-ares' own timeout applies per try; this guard bounds the whole lookup regardless.
  return withDeadline(query, opts.timeoutMs * opts.tries + 500, () => {
    resolver.cancel();
    return { ok: false, error: 'timeout' };
  });
}
