// Fault operations (issue 13): kill or restart one of a qube's processes the way it dies or is
// restarted on a real system, and let what brings it back on a real system bring it back here.
//
//   qubesdb  the QubesDB daemon (qubes-db.service). kill = SIGKILL, restart = SIGTERM; either
//            way the daemon comes back empty (Restart=) and dom0 writes this qube's keys again.
//   uplink   the uplink watcher (qubes-net-uplink-watch@eth0; alias `guest`): kill = SIGKILL,
//            the supervisor restarts it (Restart=on-failure) and its start re-applies the
//            uplink once, as udev's apply does; restart = SIGTERM and start.
//   agent    the merged network agent (qubes-net-agent; aliases `driver`, `firewall`: one
//            process since issue 10): kill = SIGKILL; nothing restarts it at once: its socket
//            stays bound by the activating watcher (qubes-net-agent.socket under systemd), so
//            the next hotplug, QubesDB change or sync starts it again (socket activation);
//            restart = SIGTERM (it exits cleanly), then a status request starts it, as
//            `systemctl restart` does.
//   watch    the agent's activating watcher (qubes-net-agent-watch.service): kill = SIGKILL;
//            what it started gets SIGTERM (the unit's cgroup), then it is started again.
import { readFileSync } from 'node:fs';
import type { Lab } from '../runtime/lab.js';
import { sendAgentRequest } from '../runtime/agent-control.js';
import { waitUntil } from '../runtime/qdb-ops.js';
import { childPids, stopPids } from '../runtime/processes.js';

export const FAULT_AGENTS = ['qubesdb', 'uplink', 'agent', 'watch'] as const;
export type FaultAgent = (typeof FAULT_AGENTS)[number];
export type FaultAction = 'kill' | 'restart';

const ALIASES: Record<string, { agent: FaultAgent; note?: string }> = {
  qubesdb: { agent: 'qubesdb' },
  uplink: { agent: 'uplink' },
  guest: { agent: 'uplink' },
  agent: { agent: 'agent' },
  driver: { agent: 'agent', note: 'the driver and the firewall are one process now (qubes-net-agent)' },
  firewall: { agent: 'agent', note: 'the driver and the firewall are one process now (qubes-net-agent)' },
  watch: { agent: 'watch' },
};

export function parseFaultAgent(name: string): { agent: FaultAgent; note?: string } {
  const a = ALIASES[name];
  if (!a) throw new Error(`unknown agent ${JSON.stringify(name)}: one of qubesdb, uplink (guest), agent (driver, firewall), watch`);
  return a;
}

export function parseFaultAction(name: string): FaultAction {
  if (name !== 'kill' && name !== 'restart') throw new Error(`unknown action ${JSON.stringify(name)}: kill or restart`);
  return name;
}

export interface FaultResult {
  qube: string;
  agent: FaultAgent;
  action: FaultAction;
  /** The pid that got the signal (undefined: the agent was not running, nothing to kill). */
  pid?: number;
  /** The process that runs now (undefined: down until its next activation). */
  newPid?: number;
  /** Milliseconds from the signal until it was back (or the op returned). */
  ms: number;
  /** What brings it back on a real system. */
  models: string;
  note?: string;
}

/**
 * The network agent's pid: the activating watcher's child running `… run --socket …`, if one
 * runs. Not just any child: a network qube's one watcher also runs the uplink's one-shot applies.
 */
export function networkAgentPid(lab: Lab, qube: string): number | undefined {
  const watcher = lab.runningQube(qube).agents.get('agent');
  if (!watcher?.running) return undefined;
  return childPids(watcher.pid).find((pid) => {
    const argv = commandLine(pid);
    return argv.includes('run') && argv.includes('--socket');
  });
}

function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Starts the network agent (a status request on its socket activates it) and waits until ready. */
export async function activateAgent(lab: Lab, qube: string): Promise<number> {
  const rq = lab.runningQube(qube);
  await lab.waitAgentReady(rq);
  return waitUntil(`${qube}'s network agent process`, async () => networkAgentPid(lab, qube), { timeoutMs: lab.waitTimeoutMs });
}

export async function agentFault(lab: Lab, qube: string, agentName: string, action: FaultAction): Promise<FaultResult> {
  const { agent, note } = parseFaultAgent(agentName);
  const rq = lab.runningQube(qube);
  const spec = lab.spec(qube);
  const t0 = Date.now();
  const base = { qube, agent, action, ...(note ? { note } : {}) };
  switch (agent) {
    case 'qubesdb': {
      const pid = rq.qdbDaemon.pid;
      const newPid = await lab.restartQubesDB(qube, action === 'kill' ? 'kill' : 'stop');
      return { ...base, pid, newPid, ms: Date.now() - t0, models: 'qubes-db.service Restart=: the daemon starts empty, dom0 writes its keys again, clients reconnect' };
    }
    case 'uplink': {
      if (spec.netvm === null) throw new Error(`${qube} has no netvm, so no uplink watcher`);
      const old = rq.agents.get('guest');
      const p = action === 'kill' ? await lab.crashResident(qube, 'guest') : await lab.restartResident(qube, 'guest');
      return { ...base, ...(old ? { pid: old.pid } : {}), newPid: p.pid, ms: Date.now() - t0, models: 'qubes-net-uplink-watch@eth0 with Restart=: started again, its start re-applies the uplink' };
    }
    case 'agent': {
      if (!spec.providesNetwork) throw new Error(`${qube} provides no network, so it runs no network agent`);
      if (action === 'kill') {
        const pid = networkAgentPid(lab, qube);
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
        lab.progress({ qube, step: pid === undefined ? 'network agent not running (idle): nothing to kill' : 'network agent killed (SIGKILL)', detail: pid === undefined ? undefined : `pid ${pid}` });
        return { ...base, ...(pid !== undefined ? { pid } : {}), ms: Date.now() - t0, models: 'socket activation (qubes-net-agent.socket): the socket stays bound, the next request or trigger starts the agent again' };
      }
      const pid = networkAgentPid(lab, qube);
      if (pid !== undefined) await stopPids([pid], 10_000);
      const newPid = await activateAgent(lab, qube);
      return { ...base, ...(pid !== undefined ? { pid } : {}), newPid, ms: Date.now() - t0, models: 'systemctl restart qubes-net-agent: SIGTERM (clean exit), started again through its socket' };
    }
    case 'watch': {
      if (!spec.providesNetwork) throw new Error(`${qube} provides no network, so it has no agent watcher`);
      const old = rq.agents.get('agent');
      let p;
      if (action === 'kill') {
        const children = old?.running ? childPids(old.pid) : [];
        p = await lab.crashResident(qube, 'agent', children);
      } else p = await lab.restartResident(qube, 'agent');
      return { ...base, ...(old ? { pid: old.pid } : {}), newPid: p.pid, ms: Date.now() - t0, models: 'qubes-net-agent-watch.service with Restart= and KillMode=control-group: what it started is stopped, then it starts again' };
    }
  }
}

/** `qubes-net-lab qubesdb-restart QUBE`: the daemon killed, started empty, dom0's keys written again. */
export function qubesdbRestart(lab: Lab, qube: string): Promise<FaultResult> {
  return agentFault(lab, qube, 'qubesdb', 'kill');
}
