// Changing sys-net's upstream DNS (what a DHCP renewal or a VPN does): the uplink qube's
// resolv.conf is rewritten, its network agent is told (as NetworkManager's dispatcher hook would), and
// the driver's /qubes-dns-upstream must then show the new servers.
import { parseIPv4, parseIPv6 } from '@qubes-net/common';
import type { Lab } from '../runtime/lab.js';
import { sendAgentRequest } from '../runtime/agent-control.js';
import { waitUntil } from '../runtime/qdb-ops.js';

/** What the virtual DNS pair should map to: the first two IPv4 servers (IPv6 ones are ignored). */
export function expectedUpstream(servers: readonly string[]): string[] {
  return servers.filter((s) => parseIPv4(s)).slice(0, 2);
}

export async function setUpstreamDns(lab: Lab, servers: string[]): Promise<{ upstream: string | undefined }> {
  if (servers.length === 0) throw new Error('give at least one DNS server');
  for (const s of servers) if (!parseIPv4(s) && !parseIPv6(s)) throw new Error(`not an IP address: ${JSON.stringify(s)}`);
  lab.model.internet.dns = [...servers];
  await lab.internet.setDns(servers);
  lab.progress({ step: 'upstream DNS changed', detail: servers.join(' ') });
  const uplinks = [...lab.running.values()].filter((r) => lab.spec(r.name).uplink);
  let upstream: string | undefined;
  const want = expectedUpstream(servers);
  for (const rq of uplinks) {
    const r = await sendAgentRequest(rq.ns, { op: 'sync', reason: 'uplink DNS changed' }).catch((err) => ({ ok: false, message: String(err) }));
    if (!r.ok) lab.log.warn({ qube: rq.name, err: r.message }, 'network agent did not take the DNS change');
    let last: string | undefined;
    upstream = await waitUntil(`${rq.name}'s driver to map the virtual DNS to ${want.join(' ') || '(nothing: dropped)'} (/qubes-dns-upstream)`, async () => {
      last = await rq.db.read('/qubes-dns-upstream');
      if (last === undefined) return undefined;
      const got = [...new Set(last.split(' ').filter(Boolean))];
      return got.length === new Set(want).size && got.every((s) => want.includes(s)) ? last : undefined;
    }, { timeoutMs: lab.waitTimeoutMs, lastSeen: () => last });
  }
  await lab.saveState();
  return { upstream };
}
