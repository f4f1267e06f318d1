// `qubes-net-agent hotplug online|offline`: the one-shot path the C hotplug client execs when
// the agent's socket file does not exist at all (no socket unit, no activator). The driver's
// one-shot hotplug does the work in-process (base ruleset if missing, the vif, its feedback);
// it first asks the agent's socket, which covers an agent that appeared meanwhile.
import { createLogger } from '@qubes-net/common';
import { requireRootOrExit } from '@qubes-net/common/root';
import { hotplug, parseOptions as driverOptions } from '@qubes-net/driver-agent';
import type { AgentOptions } from './options.js';

export async function hotplugFallback(opts: AgentOptions): Promise<number> {
  requireRootOrExit('qubes-net-agent hotplug');
  const d = driverOptions([
    '--control-socket', opts.socket,
    '--resolv-conf', opts.resolvConf,
    '--hooks-dir', opts.hooksDir,
    ...(opts.qubesdbDir ? ['--qubesdb-run-dir', opts.qubesdbDir] : []),
    ...(opts.resolved === 'off' ? ['--no-resolved'] : []),
    ...(opts.resolvedDir ? ['--resolved-dir', opts.resolvedDir] : []),
    ...(opts.firewall === 'on' ? ['--firewall'] : opts.firewall === 'off' ? ['--no-firewall'] : []),
  ]);
  return hotplug({ command: opts.positionals[0] ?? process.env.command ?? '', vif: process.env.vif, xenbusPath: process.env.XENBUS_PATH }, d, createLogger('agent-hotplug'));
}
