// `qubes-net-driver base-ruleset`: the base tables in one transaction, as the files rendered
// for boot hold them, plus what this qube's QubesDB says (connected addresses, the firewall
// skeleton where the service is on). Touches neither vif elements nor forwarding.
import type { Logger } from '@qubes-net/common';
import type { QubesDB } from '@qubes-net/qubesdb';
import { renderBaseRuleset } from './model/ruleset.js';
import { kernelHasIPv6 } from './kernel/procfs.js';
import { applyNft } from './kernel/nft-writer.js';
import { ProviderManager } from './managers/provider.js';

export async function loadBaseRuleset(opts: { qdb: QubesDB; log: Logger; firewall: 'auto' | 'on' | 'off' }): Promise<void> {
  const ipv6 = kernelHasIPv6();
  const provider = new ProviderManager({ qdb: opts.qdb, log: opts.log, firewall: opts.firewall, ipv6Kernel: () => ipv6 });
  const config = await provider.read(true);
  const skeleton = await provider.skeleton(config);
  if (config.firewallService && !skeleton) throw new Error('qubes-firewall service is on but its skeleton cannot be loaded');
  // DNS is not known at boot: the dnat-dns chain starts empty; the agent fills it.
  await applyNft([renderBaseRuleset({ ipv6, connected4: config.connected4, connected6: config.connected6, dns: { mode: 'none', pairs: [], upstream: [] }, ...(skeleton ? { firewallSkeleton: skeleton } : {}) })]);
  opts.log.info({ ipv6, firewall: !!skeleton }, 'base ruleset loaded');
}
