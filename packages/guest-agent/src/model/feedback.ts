// The `/qubes-uplink-status` value: `<generation> ok|error|unconfigured <detail>`. The detail
// names keys and reasons but never repeats an untrusted value, and stays one short line.

export type UplinkStatus = 'ok' | 'error' | 'unconfigured';

const MAX_DETAIL = 200;

export function formatUplinkStatus(generation: string, status: UplinkStatus, detail: string): string {
  const clean = detail.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_DETAIL);
  return `${generation} ${status} ${clean}`.trimEnd();
}

/** Parses a status value back (for `status` and tests). */
export function parseUplinkStatus(value: string): { generation: string; status: UplinkStatus; detail: string } | undefined {
  const m = /^(\S+) (ok|error|unconfigured)(?: (.*))?$/.exec(value);
  return m ? { generation: m[1]!, status: m[2] as UplinkStatus, detail: m[3] ?? '' } : undefined;
}

/**
 * Generations that change on every apply and never repeat across restarts of the process:
 * `<start time in ms, base 36>-<apply counter>`.
 */
export function generationCounter(startMs: number = Date.now()): () => string {
  const prefix = startMs.toString(36);
  let n = 0;
  return () => `${prefix}-${++n}`;
}
