// An agent (or any pino-logging program) started inside a qube, with its JSON log lines
// collected as they arrive, so tests wait on the agent's own events instead of sleeping.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Qube } from '@qubes-net/netns';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: any;
}

export interface AgentProcess {
  child: ChildProcess;
  logs: LogLine[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Starts `node ARGS…` inside `qube` (debug logs unless `env` says otherwise). */
export function spawnAgent(qube: Qube, args: string[], env: Record<string, string> = {}): AgentProcess {
  const child = qube.spawn(process.execPath, args, { env: { QUBES_NET_LOG_LEVEL: 'debug', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  return followLogs(child);
}

/** Collects the JSON log lines of an already started child (stdout piped). */
export function followLogs(child: ChildProcess): AgentProcess {
  const logs: LogLine[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    if (!l.startsWith('{')) return;
    try {
      logs.push(JSON.parse(l) as LogLine);
    } catch {
      // a partial line at exit
    }
  });
  child.stderr?.resume();
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, logs, exited };
}
