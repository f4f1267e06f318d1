// The uplink's kernel state in one `ip -j -batch` process, and a whole change in one
// `ip -force -batch` process.
import { readFile } from 'node:fs/promises';
import { parseKernelState, STATE_READ_COMMANDS, type KernelState } from '../model/kernel-state.js';
import { runProgram } from './spawn.js';

const IP = process.env.QUBES_NET_IP ?? 'ip';

export async function readKernelState(): Promise<KernelState> {
  const res = await runProgram(IP, ['-j', '-batch', '-'], { input: STATE_READ_COMMANDS.join('\n') + '\n', timeoutMs: 10_000 });
  if (res.code !== 0) throw new Error(`ip -j -batch failed (exit ${res.code}): ${res.stderr.trim()}`);
  return parseKernelState(res.stdout);
}

/**
 * Runs the lines in one process. `-force` makes ip go on after a failing line, so one
 * already-gone entry does not leave the rest undone; the caller re-reads on the next pass.
 */
export async function applyIpBatch(lines: readonly string[]): Promise<{ ok: boolean; error: string }> {
  if (lines.length === 0) return { ok: true, error: '' };
  for (const l of lines) if (/[\n\r]/.test(l)) throw new Error(`ip batch line contains a line break: ${JSON.stringify(l)}`);
  const res = await runProgram(IP, ['-force', '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 10_000 });
  return { ok: res.code === 0, error: res.stderr.trim() };
}

/** Whether IPv6 can be configured on `ifname`: the stack exists and is not disabled there. */
export async function ipv6Usable(ifname: string): Promise<boolean> {
  try {
    return (await readFile(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, 'utf8')).trim() === '0';
  } catch {
    return false; // no such file: IPv6 not built, ipv6.disable=1, or the link is gone
  }
}

/**
 * The link's max_mtu as the driver states it (`ip -d`; not in sysfs), or undefined when ip
 * cannot tell (no such link, no limit stated). Read only when an MTU is requested.
 */
export async function readMaxMtu(ifname: string): Promise<number | undefined> {
  const res = await runProgram(IP, ['-j', '-d', 'link', 'show', 'dev', ifname], { timeoutMs: 10_000 });
  if (res.code !== 0) return undefined;
  try {
    const [link] = JSON.parse(res.stdout) as { max_mtu?: unknown }[];
    return typeof link?.max_mtu === 'number' && link.max_mtu > 0 ? link.max_mtu : undefined;
  } catch {
    return undefined;
  }
}
