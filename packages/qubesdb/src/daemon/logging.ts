// Logging helpers for the daemon that do not load @qubes-net/common at run time: its index
// pulls in execa and koffi, ~25 MB of RSS the daemon does not need (its memory budget is
// 60 MB with 256 clients and 10,000 keys). Only the Logger *type* comes from there (erased).
import type { Logger } from '@qubes-net/common';

/** The part of a pino logger the daemon uses. */
export type DaemonLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

const nothing = (): void => {};
export const silentDaemonLogger: DaemonLogger = { debug: nothing, info: nothing, warn: nothing, error: nothing };

/** Shortens an untrusted value for a log field (same rule as common's forLog). */
export function shorten(value: unknown, max = 80): string {
  const s = String(value);
  return s.length > max ? `${s.slice(0, max)}…(${s.length} bytes)` : s;
}
