// `qubes-net-firewall status`: what the kernel holds (read back from nft) next to what the
// daemon last reported in its status file, and where the two disagree.
import { readFile } from 'node:fs/promises';
import type { NftOptions } from '@qubes-net/common';
import { readFamilyState, type FamilyState } from './kernel/nft.js';
import { qubeChainName } from './model/skeleton.js';
import type { StatusFile } from './daemon.js';

export interface FamilyReport {
  present: boolean;
  forwardPolicy?: string;
  /** Whether `forward` holds the firewall's own rules. */
  forwardRules: boolean;
  qubeChains: number;
  dispatchElements: number;
  dnsAddr: string[];
}

export interface StatusReport {
  daemon: { running: boolean; pid?: number; ready?: boolean; startedAt?: string; statusWrittenAt?: string };
  kernel: { ipv4: FamilyReport; ipv6: FamilyReport };
  qubes: (StatusFile['qubes'][number] & { inKernel: boolean })[];
  counts: Record<string, number>;
  problems: string[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function collectStatus(paths: { pidfile: string; statusFile: string }, nft: NftOptions = {}): Promise<StatusReport> {
  const problems: string[] = [];
  let pid: number | undefined;
  try {
    const text = (await readFile(paths.pidfile, 'utf8')).trim();
    if (/^[1-9]\d{0,9}$/.test(text)) pid = Number(text);
  } catch {
    /* not running */
  }
  const running = pid !== undefined && alive(pid);
  let file: StatusFile | undefined;
  try {
    file = JSON.parse(await readFile(paths.statusFile, 'utf8')) as StatusFile;
  } catch {
    /* no status yet */
  }
  const states = { 4: await readFamilyState(4, nft), 6: await readFamilyState(6, nft) };
  const kernel = { ipv4: familyReport(states[4]), ipv6: familyReport(states[6]) };
  for (const [name, f] of [['ip', kernel.ipv4], ['ip6', kernel.ipv6]] as const) {
    if (!f.present) problems.push(`table ${name} qubes-firewall missing: forwarded traffic is not filtered by qube`);
    else if (f.forwardPolicy !== 'drop') problems.push(`table ${name} qubes-firewall: forward policy is ${f.forwardPolicy ?? 'missing'}, not drop`);
    else if (!f.forwardRules) problems.push(`table ${name} qubes-firewall: forward holds none of the firewall's rules (added when the firewall starts): nothing is forwarded`);
  }
  if (!running) problems.push('daemon not running (rules stay in force; changes are not applied)');
  const qubes = (file?.qubes ?? []).map((q) => {
    const st = states[q.family];
    const inKernel = st.dispatch.get(q.ip) === qubeChainName(q.ip) && st.chains.has(qubeChainName(q.ip));
    if (!inKernel && running) problems.push(`${q.ip}: reported applied but its chain or dispatch element is missing`);
    return { ...q, inKernel };
  });
  const counts: Record<string, number> = {};
  for (const q of qubes) counts[q.outcome] = (counts[q.outcome] ?? 0) + 1;
  const daemon: StatusReport['daemon'] = { running };
  if (pid !== undefined) daemon.pid = pid;
  if (file) Object.assign(daemon, { ready: file.ready, startedAt: file.startedAt, statusWrittenAt: file.writtenAt });
  return { daemon, kernel, qubes, counts, problems };
}

function familyReport(s: FamilyState): FamilyReport {
  const r: FamilyReport = {
    present: s.present,
    forwardRules: s.forwardRules,
    qubeChains: [...s.chains.keys()].filter((c) => c.startsWith('qbs-')).length,
    dispatchElements: s.dispatch.size,
    dnsAddr: s.dnsAddr,
  };
  if (s.forwardPolicy !== undefined) r.forwardPolicy = s.forwardPolicy;
  return r;
}

export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  lines.push(`daemon: ${r.daemon.running ? `running (pid ${r.daemon.pid})${r.daemon.ready === false ? ', not ready' : ''}` : 'not running'}`);
  for (const [name, f] of [['ip', r.kernel.ipv4], ['ip6', r.kernel.ipv6]] as const) {
    lines.push(`${name} qubes-firewall: ${f.present ? `forward policy ${f.forwardPolicy}, ${f.qubeChains} qube chains, ${f.dispatchElements} dispatch elements, dns-addr {${f.dnsAddr.join(', ')}}` : 'MISSING'}`);
  }
  lines.push(`qubes: ${r.qubes.length} (${Object.entries(r.counts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'})`);
  for (const q of r.qubes) {
    const extra = [...q.reasons, ...q.notes].join('; ');
    lines.push(`  ${q.ip.padEnd(39)} ${q.outcome.padEnd(8)} gen ${q.generation}, ${q.rules} rules${q.inKernel ? '' : ', NOT IN KERNEL'}${extra ? ` - ${extra}` : ''}`);
  }
  for (const p of r.problems) lines.push(`problem: ${p}`);
  return lines.join('\n') + '\n';
}
