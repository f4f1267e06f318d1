// Starting, stopping and killing qubes, the way dom0 does: a qube's netvm starts first; before
// a client's vif appears, its provider gets the client's entries; a provider that starts
// re-plugs its running clients; a provider that goes away unplugs them.
import { startOrder } from '../topology/model.js';
import type { Lab } from '../runtime/lab.js';

/** Starts the qube (and its netvm chain) and waits until its agents report it configured. */
export async function startQube(lab: Lab, name: string): Promise<void> {
  lab.spec(name);
  for (const n of startOrder(lab.model, [name])) {
    if (!lab.isRunning(n)) await bootQube(lab, n);
  }
}

/**
 * Starts every qube marked `start` (the default), netvm before clients; qubes whose netvms are
 * already up start in parallel, so a wide topology does not start one qube at a time.
 */
export async function upAll(lab: Lab): Promise<void> {
  const wanted = startOrder(lab.model, [...lab.model.qubes.values()].filter((q) => q.autostart).map((q) => q.name));
  const pending = new Set(wanted.filter((n) => !lab.isRunning(n)));
  const starting = new Map<string, Promise<void>>();
  const failures: unknown[] = [];
  const launch = (n: string): void => {
    pending.delete(n);
    starting.set(n, bootQube(lab, n).catch((err) => { failures.push(err); }).finally(() => starting.delete(n)));
  };
  while (pending.size && failures.length === 0) {
    // A client needs its netvm fully started (driver ready), not just created.
    const ready = [...pending].filter((n) => {
      const nv = lab.spec(n).netvm;
      return nv === null || (lab.isRunning(nv) && !starting.has(nv) && !pending.has(nv));
    });
    ready.forEach(launch);
    if (starting.size === 0) throw new Error(`cannot start ${[...pending].join(', ')}: their netvms did not start`);
    await Promise.race(starting.values());
  }
  await Promise.all(starting.values());
  if (failures.length) throw failures[0];
}

/** One domain start: create, plug into the netvm, start the guest agent, re-plug clients. */
async function bootQube(lab: Lab, name: string): Promise<void> {
  const spec = lab.spec(name);
  if (spec.netvm !== null && !lab.isRunning(spec.netvm)) throw new Error(`cannot start ${name}: its netvm ${spec.netvm} is not running`);
  const rq = await lab.createDomain(name);
  try {
    if (spec.netvm !== null) {
      await lab.attachVif(name);
      await lab.startAgent(rq, 'guest');
      // domain-start: dom0 pushes the client's firewall once more.
      await lab.pushFirewall(name);
    }
    // A provider that (re)starts gets its running clients back (domain-qdb-create / started).
    const reattach = [...lab.running.values()].filter((c) => c.name !== name && lab.spec(c.name).netvm === name && !c.vif);
    for (const c of reattach) await lab.attachVif(c.name);
    await lab.waitQubeReady(name);
    await Promise.all(reattach.map(async (c) => {
      await lab.pushFirewall(c.name);
      await lab.waitQubeReady(c.name);
    }));
    lab.progress({ qube: name, step: 'running', detail: `domid ${rq.domid}` });
  } catch (err) {
    lab.progress({ qube: name, step: 'start failed', detail: String((err as Error).message ?? err) });
    throw err;
  } finally {
    await lab.saveState().catch(() => {});
  }
}

/**
 * Shuts the qube down. Clients of a provider lose their vif first (dom0 detaches them; they
 * keep running and get it back when the provider starts again).
 */
export async function stopQube(lab: Lab, name: string): Promise<void> {
  lab.spec(name);
  if (!lab.isRunning(name)) return;
  for (const c of lab.attachedClients(name)) await lab.detachVif(c.name);
  await lab.stopAgents(name);
  await lab.detachVif(name);
  await lab.destroyDomain(name, { kill: false });
  lab.progress({ qube: name, step: 'halted' });
  await lab.saveState();
}

/**
 * Kills the qube (xl destroy, or a crash): its processes die at once, nothing inside it gets
 * to clean up. The toolstack still tears the backend down, so a killed client's netvm runs
 * the hotplug `offline`; a killed provider's clients just lose their vif.
 */
export async function killQube(lab: Lab, name: string): Promise<void> {
  lab.spec(name);
  const rq = lab.running.get(name);
  if (!rq) return;
  await Promise.all([...rq.agents.values(), rq.qdbDaemon].map((p) => p.kill()));
  for (const c of lab.attachedClients(name)) await lab.detachVif(c.name, { hotplug: false });
  await lab.detachVif(name);
  await lab.destroyDomain(name, { kill: true });
  lab.progress({ qube: name, step: 'killed' });
  await lab.saveState();
}

/** Restart: shut down, start again; a provider's clients re-attach on its start. */
export async function restartQube(lab: Lab, name: string): Promise<void> {
  await stopQube(lab, name);
  await startQube(lab, name);
}
