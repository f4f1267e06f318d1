// Changing a qube's netvm at runtime, as dom0 does it: detach the vif (hotplug offline in the
// old netvm, the veth goes), rewrite the qube's QubesDB, attach a new vif to the new netvm.
import { cloneModel } from '../topology/model.js';
import { descendants, netvmChain } from '../dom0/addresses.js';
import type { Lab } from '../runtime/lab.js';
import { propagate } from './propagate.js';

export async function setNetvm(lab: Lab, name: string, netvm: string | null): Promise<void> {
  const spec = lab.spec(name);
  if (netvm !== null) {
    const nv = lab.spec(netvm);
    if (netvm === name) throw new Error(`${name} cannot be its own netvm`);
    if (!nv.providesNetwork) throw new Error(`${netvm} does not provide network`);
    if (netvmChain(lab.model, netvm).includes(name)) throw new Error(`${netvm} is behind ${name}: that would be a netvm loop`);
  }
  if (spec.netvm === netvm) return;
  const rq = lab.running.get(name);
  if (rq && netvm !== null && !lab.isRunning(netvm)) throw new Error(`cannot attach ${name} to ${netvm}: ${netvm} is not running (start it first)`);
  const before = cloneModel(lab.model);
  const old = spec.netvm;
  const uplinkBefore = await lab.uplinkGeneration(name);
  if (rq) await lab.detachVif(name);
  spec.netvm = netvm;
  lab.progress({ qube: name, step: 'netvm changed', detail: `${old ?? 'none'} → ${netvm ?? 'none'}` });
  await propagate(lab, before, [name, ...descendants(lab.model, name)], { skipWait: [name] });
  if (rq && netvm !== null) {
    await lab.attachVif(name);
    await lab.startAgent(rq, 'guest');
    // net-domain-connect: dom0 reloads the firewall for the qube.
    await lab.pushFirewall(name);
    await lab.waitQubeReady(name, { uplinkBefore });
  }
  await lab.saveState();
}
