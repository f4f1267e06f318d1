// One pino logger per process, JSON to stdout so journald (or the lab) collects it.
// Every event carries a `component` field; callers add qube/vif/ip fields per event.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export function createLogger(component: string, level?: LevelWithSilent): Logger {
  const chosen = level ?? (process.env.QUBES_NET_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  return pino({ level: chosen, base: { component, pid: process.pid } });
}

/** A logger that drops everything: for unit tests and library callers that do not log. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
