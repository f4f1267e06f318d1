// Propagating a model change (ipv6 feature, fake IP, netvm) to everything it affects, the
// way dom0 would if it re-pushed at once instead of waiting for the next start: the qube and
// the qubes below it get their own entries rewritten, providers their /connected-ips*, and
// every plugged vif whose addresses or gateways changed is re-plugged (hotplug offline, new
// provider entries, hotplug online). Then each rewritten qube's agent must report again.
import { CLIENT_NETWORK_KEYS, VM_CONFIG_KEYS, connectedIps, ownEntries, vifBackendEntries } from '../dom0/entries.js';
import { netMtuOf } from '../dom0/addresses.js';
import { startOrder, type LabModel } from '../topology/model.js';
import type { Lab } from '../runtime/lab.js';

/** What the guest agent watches: a change there makes it apply and report again. */
function guestKeys(model: LabModel, name: string): string {
  const e = ownEntries(model, name);
  return JSON.stringify([...e].filter(([k]) => (CLIENT_NETWORK_KEYS as readonly string[]).includes(k) || (VM_CONFIG_KEYS as readonly string[]).includes(k) || k === '/qubes-netvm-network' || k.startsWith('/qubes-service/')));
}

const PROVIDER_GATEWAY_KEYS = ['/qubes-netvm-gateway', '/qubes-netvm-gateway6', '/qubes-netvm-primary-dns', '/qubes-netvm-secondary-dns'];

function providerKeys(model: LabModel, name: string): string {
  const e = ownEntries(model, name);
  return JSON.stringify(PROVIDER_GATEWAY_KEYS.map((k) => e.get(k)));
}

export async function propagate(lab: Lab, before: LabModel, affected: readonly string[], opts: { skipWait?: readonly string[] } = {}): Promise<void> {
  const after = lab.model;
  const running = (n: string) => lab.isRunning(n);
  for (const p of [...after.qubes.values()].filter((q) => q.providesNetwork && running(q.name))) {
    const was = before.qubes.has(p.name) ? JSON.stringify(connectedIps(before, p.name)) : '';
    if (was !== JSON.stringify(connectedIps(after, p.name))) await lab.writeConnectedIps(p.name);
  }
  const order = startOrder(after, affected).filter((n) => affected.includes(n) && running(n));
  const rewritten: Array<{ name: string; uplinkBefore: string | undefined }> = [];
  for (const n of order) {
    const changed = JSON.stringify([...ownEntries(before, n)]) !== JSON.stringify([...ownEntries(after, n)]);
    if (!changed) continue;
    const uplinkBefore = await lab.uplinkGeneration(n);
    await lab.writeOwnEntries(n);
    if (guestKeys(before, n) !== guestKeys(after, n)) rewritten.push({ name: n, uplinkBefore });
  }
  const gatewayChanged = new Set(order.filter((n) => after.qubes.get(n)!.providesNetwork && providerKeys(before, n) !== providerKeys(after, n)));
  const replugged: Array<{ name: string; fw: Map<string, string | undefined> }> = [];
  for (const n of order) {
    const vif = lab.running.get(n)?.vif;
    if (!vif) continue;
    const mtuChanged = netMtuOf(before, n) !== netMtuOf(after, n);
    if (!lab.vifOutdated(n) && !gatewayChanged.has(vif.provider) && !mtuChanged) continue;
    if (mtuChanged && netMtuOf(after, n) === undefined) {
      // The re-plug writes the backend entries that exist; a removed MTU must go from xenstore.
      const { path } = vifBackendEntries(after, n, vif.backendDomid, lab.running.get(n)!.domid);
      await lab.running.get(vif.provider)?.ns.xenstoreRm(`${path}/mtu`);
    }
    const fw = await lab.firewallGenerations(n);
    await lab.replugVif(n);
    replugged.push({ name: n, fw });
  }
  const skip = new Set(opts.skipWait ?? []);
  for (const { name, fw } of replugged) {
    if (skip.has(name)) continue;
    await lab.waitVifOnline(name);
    await lab.waitFirewallApplied(name, fw);
  }
  for (const { name, uplinkBefore } of rewritten) {
    if (skip.has(name) || !lab.running.get(name)?.vif || !lab.running.get(name)?.agents.has('guest')) continue;
    await lab.waitUplink(name, uplinkBefore);
  }
}
