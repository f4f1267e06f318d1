// Name resolution for dsthost rules: asks this VM's own resolvers (from resolv.conf) directly,
// with a hard timeout, and keeps the TTL so the daemon knows when to ask again.
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
}

export const DEFAULT_RESOLVE: ResolveOptions = { timeoutMs: 2_000, tries: 2 };

const ERROR_TEXT: Record<string, string> = {
  ENOTFOUND: 'no such name',
  ETIMEOUT: 'timeout',
  ECANCELLED: 'timeout',
  ESERVFAIL: 'server failure',
  EREFUSED: 'query refused',
  ECONNREFUSED: 'connection refused',
};

/** TTL used for a name that exists without addresses of the asked family. */
const NODATA_TTL_SECONDS = 300;

/**
 * Resolves `host` for `family` against `servers`. Never rejects: a failure is a value. A name
 * that exists but has no address of this family resolves to an empty list (its rule then
 * matches nothing); a name that does not exist, a timeout or a server failure does not resolve.
 */
export async function resolveHost(host: string, family: Family, servers: readonly string[], opts: ResolveOptions = DEFAULT_RESOLVE): Promise<HostResolution> {
  const literal = parseIPv4(host) ?? parseIPv6(host);
  if (literal) return { ok: true, addrs: (family === 4 ? parseIPv4(host) : parseIPv6(host)) ? [literal] : [], ttlSeconds: 86_400 };
  if (servers.length === 0) return { ok: false, error: 'no nameserver in resolv.conf' };
  const resolver = new dnsPromises.Resolver({ timeout: opts.timeoutMs, tries: opts.tries });
  try {
    resolver.setServers([...servers]);
  } catch (e) {
    return { ok: false, error: `bad nameserver list: ${forLog((e as Error).message)}` };
  }
  // c-ares' own timeout applies per try; this guard bounds the whole lookup regardless.
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<HostResolution>((resolve) => {
    timer = setTimeout(() => {
      resolver.cancel();
      resolve({ ok: false, error: 'timeout' });
    }, opts.timeoutMs * opts.tries + 500);
  });
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
  try {
    return await Promise.race([query, guard]);
  } finally {
    clearTimeout(timer);
  }
}
