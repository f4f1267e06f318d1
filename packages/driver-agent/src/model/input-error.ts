// A rejected piece of untrusted input (environment, xenstore, QubesDB, resolv.conf, control
// socket). It names where the value came from and carries the value already shortened for
// logs, so a caller can log it as one structured event without re-reading the raw input.
import { forLog } from '@qubes-net/common';

export class InputError extends Error {
  /** The value as it may appear in a log line (shortened, never the raw 3 KB). */
  readonly value: string;

  constructor(
    /** Where the value came from: `xenstore`, `qubesdb`, `env`, `control-socket`, `resolv.conf` … */
    readonly source: string,
    /** The key, path or field name within that source. */
    readonly key: string,
    value: unknown,
    readonly reason: string,
  ) {
    super(`${source} ${key}: ${reason} (value ${JSON.stringify(forLog(value))})`);
    this.name = 'InputError';
    this.value = forLog(value);
  }

  /** Fields for a pino error event. */
  logFields(): { source: string; key: string; value: string; reason: string } {
    return { source: this.source, key: this.key, value: this.value, reason: this.reason };
  }
}
