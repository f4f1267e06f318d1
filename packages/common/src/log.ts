// One pino logger per process, JSON to stdout so journald (or the lab) collects it.
// Every event carries a `component` field; callers add qube/vif/ip fields per event.
// Under systemd, when stdout is the journal's stream, each line starts with the `<N>` syslog
// priority of its level (as the line logger does), so `journalctl -p warning` finds warnings.
import { writeSync } from 'node:fs';
import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import { stdoutIsJournal } from './line-log.js';

export type { Logger };

/** pino level number → syslog priority (trace/debug 7, info 6, warn 4, error 3, fatal 2). */
export function syslogPriority(level: number): number {
  return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/** Prefixes one pino line (`{"level":N,...}\n`) with its `<priority>`. */
export function journalLine(line: string): string {
  const m = /^\{"level":(\d+)/.exec(line);
  return m ? `<${syslogPriority(Number(m[1]))}>${line}` : line;
}

/** stdout, synchronously (nothing lost on process.exit), each line with its priority. */
function journalDestination(): DestinationStream {
  return { write: (line: string) => { writeSync(1, journalLine(line)); } };
}

export function createLogger(component: string, level?: LevelWithSilent): Logger {
  const chosen = level ?? (process.env.QUBES_NET_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  const opts = { level: chosen, base: { component, pid: process.pid } };
  return stdoutIsJournal() ? pino(opts, journalDestination()) : pino(opts);
}

/** A logger that drops everything: for unit tests and library callers that do not log. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
