// What the guest benches share: the figure line (median and p95 of ours next to the same-run
// baseline) and the client's uplink taken down / checked configured between rounds.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ipBatch, ipJson } from '@qubes-net/common';
import type { Qube } from '@qubes-net/netns';

export const round2 = (v: number): number => Math.round(v * 100) / 100;

export function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export function report(figure: string, unit: string, ours: number[], baselineName: string, base: number[], target: string, met: boolean, extra: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({
    bench: 'guest-agent',
    figure,
    ...extra,
    unit,
    value: round2(pct(ours, 50)),
    p95: round2(pct(ours, 95)),
    n: ours.length,
    baseline: { name: baselineName, value: round2(pct(base, 50)), p95: round2(pct(base, 95)), n: base.length },
    target,
    met,
  }) + '\n');
}

/** Takes the client's uplink back to unconfigured (link down, no address, no resolv.conf). */
export async function unconfigure(client: Qube): Promise<void> {
  const res = await ipBatch(['link set dev eth0 down', 'address flush dev eth0 scope global', 'neigh flush dev eth0 nud permanent'], { netns: client.netns, force: true });
  if (!res.ok && !/Nothing to flush/.test(res.stderr)) throw new Error(res.stderr);
  rmSync(client.hostPath('/run/qubes-net/guest-eth0.json'), { force: true });
  writeFileSync(client.hostPath('/etc/resolv.conf'), '');
}

/** Whether the client's uplink holds Appendix A's configuration (address `ip`). */
export async function configured(client: Qube, ip = '10.137.0.7'): Promise<boolean> {
  const links = await ipJson<any[]>(['address', 'show', 'dev', 'eth0'], { netns: client.netns });
  const routes = await ipJson<any[]>(['route', 'show', 'default'], { netns: client.netns });
  const addrs = (links[0]?.addr_info ?? []).map((a: any) => a.local);
  return addrs.includes(ip) && addrs.includes('fd09:24ef:4179::a89:7') && routes.some((r) => r.gateway === '10.137.0.3') &&
    readFileSync(client.hostPath('/etc/resolv.conf'), 'utf8').includes('nameserver 10.139.1.2');
}
