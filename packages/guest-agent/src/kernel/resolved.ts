// systemd-resolved (Fedora's default): when it is in use, resolv.conf alone does not decide
// which servers the system asks, so the uplink's servers are also given to it per link with
// `resolvectl dns IF …`, as upstream's setup-ip does. "In use" is upstream's test: resolvectl
// installed and the systemd-resolved unit enabled; plus one of ours: we run in the network
// namespace of PID 1, where the system's resolved lives. In any other namespace (the lab, a
// test) resolved would take our interface index for one of the host's links, so we skip.
import { access, readlink } from 'node:fs/promises';
import { constants } from 'node:fs';
import { runProcess } from '@qubes-net/common/process';

export interface ResolvedTools {
  /** Absolute path of resolvectl (upstream checks /usr/bin/resolvectl). */
  resolvectl: string;
  /** systemctl, for `is-enabled`. */
  systemctl: string;
  /** The network namespace link of the system's services (/proc/1/ns/net). */
  initNetns: string;
}

export const DEFAULT_RESOLVED_TOOLS: ResolvedTools = {
  resolvectl: '/usr/bin/resolvectl',
  systemctl: 'systemctl',
  initNetns: '/proc/1/ns/net',
};

/** Neither tool may hold up an apply: resolved or D-Bus hanging must not stall the uplink. */
export const RESOLVED_TIMEOUT_MS = 5000;

export type ResolvedUse = { use: true } | { use: false; reason: string };

/** Whether to hand the DNS servers to systemd-resolved (cheap checks first). */
export async function resolvedInUse(tools: ResolvedTools): Promise<ResolvedUse> {
  try {
    await access(tools.resolvectl, constants.X_OK);
  } catch {
    return { use: false, reason: 'resolvectl not installed' };
  }
  try {
    const [ours, init] = await Promise.all([readlink('/proc/self/ns/net'), readlink(tools.initNetns)]);
    if (ours !== init) return { use: false, reason: 'not in the system network namespace' };
  } catch {
    return { use: false, reason: 'system network namespace unknown' };
  }
  try {
    const r = await runProcess([tools.systemctl, 'is-enabled', '--quiet', 'systemd-resolved.service'], { timeoutMs: RESOLVED_TIMEOUT_MS, allowFailure: true });
    if (r.timedOut) return { use: false, reason: 'systemctl is-enabled timed out' };
    return r.exitCode === 0 ? { use: true } : { use: false, reason: 'systemd-resolved not enabled' };
  } catch (err) {
    return { use: false, reason: `systemctl: ${(err as Error).message}` };
  }
}

/** `resolvectl dns IF SERVER…`; servers are canonical addresses (validated), ifname checked by the caller. */
export async function setLinkDns(tools: ResolvedTools, ifname: string, servers: readonly string[]): Promise<{ ok: true } | { ok: false; error: string }> {
  try {
    const r = await runProcess([tools.resolvectl, 'dns', ifname, ...servers], { timeoutMs: RESOLVED_TIMEOUT_MS, allowFailure: true });
    if (r.exitCode === 0 && !r.timedOut) return { ok: true };
    return { ok: false, error: (r.stderr.trim().split('\n')[0] || `exit ${r.exitCode}`).slice(0, 200) };
  } catch (err) {
    return { ok: false, error: (err as Error).message.slice(0, 200) };
  }
}
