// The process `qubes-net-lab up` leaves behind: it owns the lab (its namespaces die with it,
// by design of @qubes-net/netns sessions), runs the agents as its children, and serves the
// control socket that later CLI invocations talk to. Progress and readiness go to the `up`
// invocation through a pipe (fd 3): JSON lines, then {"ready":…} or {"error":…}.
import { closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '@qubes-net/common';
import { parseRuleList, setFirewall } from '../ops/firewall.js';
import { setFeature } from '../ops/features.js';
import { killQube, restartQube, startQube, stopQube, upAll } from '../ops/lifecycle.js';
import { setNetvm } from '../ops/netvm.js';
import { setUpstreamDns } from '../ops/dns.js';
import { agentFault, parseFaultAction, qubesdbRestart } from '../ops/faults.js';
import { collectStatus } from '../status.js';
import { runChecks } from '../checks.js';
import type { LabModel } from '../topology/model.js';
import { serveControl, type ControlRequest } from './control.js';
import { Lab, type ProgressEvent } from './lab.js';

export const CONTROL_SOCKET = 'control.sock';

export interface SupervisorOptions {
  model: LabModel;
  stateDir: string;
  /** Pipe to the `up` invocation (progress, then ready/error); closed after. */
  reportFd?: number;
  /** On a failed up, keep what was built (to inspect it) instead of tearing down. */
  keepOnFailure?: boolean;
}

function str(args: Record<string, unknown> | undefined, key: string): string {
  const v = args?.[key];
  if (typeof v !== 'string' || v === '') throw new Error(`missing ${key}`);
  return v;
}

function strList(args: Record<string, unknown> | undefined, key: string): string[] {
  const v = args?.[key];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${key} must be a list of strings`);
  return v as string[];
}

export async function runSupervisor(opts: SupervisorOptions): Promise<number> {
  const log = createLogger('lab-supervisor');
  let reportFd = opts.reportFd;
  const report = (obj: unknown) => {
    if (reportFd === undefined) return;
    try {
      writeSync(reportFd, JSON.stringify(obj) + '\n');
    } catch {
      reportFd = undefined; // `up` went away; keep running
    }
  };
  const finishReport = () => {
    if (reportFd !== undefined) closeSync(reportFd);
    reportFd = undefined;
  };
  let broadcast: (e: ProgressEvent) => void = () => {};
  const onProgress = (e: ProgressEvent) => {
    report({ progress: e });
    broadcast(e);
  };

  let lab: Lab;
  try {
    lab = await Lab.create(opts.model, { stateDir: opts.stateDir, logger: log, onProgress });
  } catch (err) {
    report({ error: (err as Error).message });
    finishReport();
    return 1;
  }

  let exiting = false;
  let resolveExit!: (code: number) => void;
  const exitCode = new Promise<number>((r) => (resolveExit = r));
  const shutdown = async (code: number) => {
    if (exiting) return;
    exiting = true;
    try {
      await lab.serialize(() => lab.destroy());
    } catch (err) {
      log.error({ err: String(err) }, 'teardown incomplete');
      code = code || 1;
    }
    resolveExit(code);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void shutdown(0));

  const handle = async (req: ControlRequest): Promise<unknown> => {
    const a = req.args;
    switch (req.op) {
      case 'ping': return { lab: lab.model.name, pid: process.pid };
      case 'status': return lab.serialize(() => collectStatus(lab, { probe: a?.probe === true }));
      case 'checks': return lab.serialize(() => runChecks(lab));
      case 'start': return lab.serialize(() => startQube(lab, str(a, 'qube')));
      case 'stop': return lab.serialize(() => stopQube(lab, str(a, 'qube')));
      case 'kill': return lab.serialize(() => killQube(lab, str(a, 'qube')));
      case 'restart': return lab.serialize(() => restartQube(lab, str(a, 'qube')));
      case 'netvm': {
        const nv = a?.netvm;
        if (nv !== null && typeof nv !== 'string') throw new Error('netvm must be a qube name or null');
        return lab.serialize(() => setNetvm(lab, str(a, 'qube'), nv as string | null));
      }
      case 'feature': {
        const v = a?.value;
        if (v !== null && typeof v !== 'string') throw new Error('value must be a string or null (unset)');
        return lab.serialize(() => setFeature(lab, str(a, 'qube'), str(a, 'feature'), v ?? undefined));
      }
      case 'firewall': {
        const rules = parseRuleList(strList(a, 'rules'));
        return lab.serialize(async () => Object.fromEntries(await setFirewall(lab, str(a, 'qube'), rules)));
      }
      case 'dns': {
        const servers = strList(a, 'servers');
        return lab.serialize(() => setUpstreamDns(lab, servers));
      }
      case 'agent': {
        const action = parseFaultAction(str(a, 'action'));
        return lab.serialize(() => agentFault(lab, str(a, 'qube'), str(a, 'agent'), action));
      }
      case 'qubesdb-restart': return lab.serialize(() => qubesdbRestart(lab, str(a, 'qube')));
      case 'down':
        setImmediate(() => void shutdown(0));
        await exitCode;
        return { removed: lab.model.name };
      default:
        throw new Error(`unknown operation ${JSON.stringify(req.op)}`);
    }
  };

  const control = await serveControl(join(opts.stateDir, CONTROL_SOCKET), handle);
  broadcast = control.broadcast;
  try {
    await lab.serialize(() => upAll(lab));
    await lab.saveState({ ready: true });
    report({ ready: { lab: lab.model.name, stateDir: opts.stateDir, socket: join(opts.stateDir, CONTROL_SOCKET), qubes: [...lab.running.keys()] } });
  } catch (err) {
    report({ error: (err as Error).message, kept: !!opts.keepOnFailure });
    if (!opts.keepOnFailure) {
      finishReport();
      await shutdown(1);
    }
  }
  finishReport();
  const code = await exitCode;
  await control.close().catch(() => {});
  return code;
}
