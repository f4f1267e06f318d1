// One lab per test file: built from an inline topology, named with a random run id, state in
// a temporary directory; the file's `after` hook calls destroy() whatever happened. When a test
// fails, the agents' last log lines are printed to make the failure readable.
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '@qubes-net/common';
import { Lab, parseTopology, upAll } from '@qubes-net/lab';
import type { Qube } from '@qubes-net/netns';

export interface E2ELab {
  lab: Lab;
  /** Removes everything (call from the file's `after` hook). */
  destroy(): Promise<void>;
  ns(qube: string): Qube;
  /** The agents' recent log lines (for assertion messages). */
  logs(qube?: string): Promise<string>;
}

export async function startLab(yaml: string, label: string): Promise<E2ELab> {
  const model = parseTopology(yaml, `${label}.yaml`);
  model.name = `e${randomBytes(3).toString('hex')}`;
  const stateDir = await mkdtemp(join(tmpdir(), `qnet-e2e-${label}-`));
  const lab = await Lab.create(model, { stateDir, logger: createLogger(`e2e-${label}`, 'warn') });
  const e: E2ELab = {
    lab,
    destroy: () => lab.destroy(),
    ns: (q) => lab.runningQube(q).ns,
    logs: async (qube) => {
      const out: string[] = [];
      for (const rq of lab.running.values()) {
        if (qube && rq.name !== qube) continue;
        for (const p of [rq.qdbDaemon, ...rq.agents.values()]) {
          const text = await readFile(p.logFile, 'utf8').catch(() => '');
          out.push(`--- ${rq.name}/${p.role} (${p.running ? 'running' : `exited ${JSON.stringify(p.exit)}`})`, ...text.trim().split('\n').slice(-8));
        }
      }
      return out.join('\n');
    },
  };
  try {
    await upAll(lab);
  } catch (err) {
    const logs = await e.logs();
    await lab.destroy();
    throw new Error(`lab did not come up: ${(err as Error).message}\n${logs}`);
  }
  return e;
}

/** sys-net (uplink, ipv6 on) → sys-firewall → clients; extra YAML lines are appended. */
export function chainTopology(clients: string): string {
  return `
qubes:
  - { name: sys-net, qid: 2, provides_network: true, uplink: true, features: { ipv6: "1" } }
  - { name: sys-firewall, qid: 3, netvm: sys-net, provides_network: true }
${clients}`;
}
