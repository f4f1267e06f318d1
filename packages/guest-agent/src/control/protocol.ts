// The guest daemon's control socket protocol (JSON lines, like the driver's; docs/contracts.md):
// requests and replies as types, a strict parser for request lines and the reply encoder. Pure.
//
//   {"op":"apply","iface":"eth0"}   reconcile now; iface optional (default: the daemon's uplink)
//   {"op":"remove","iface":"eth0"}  take the link down and remove what we configured on it
//   {"op":"status"}                 the daemon's own state
//
// apply/remove reply {"ok":true,"result":"ok|error|unconfigured","detail":…,"exitCode":N} with
// the exit codes of `qubes-net-guest apply` (EXIT in apply.ts); a rejected request gets
// {"ok":false,"error":…,"exitCode":64}.
import { parseIfname } from '../model/uplink.js';

export const DEFAULT_CONTROL_SOCKET = '/run/qubes-net/guest.sock';

/** Longest request line accepted (bytes before the newline); real requests are ~40 bytes. */
export const MAX_REQUEST_BYTES = 1024;

export type ControlRequest =
  | { op: 'apply'; iface?: string }
  | { op: 'remove'; iface: string }
  | { op: 'status' };

export type ParsedRequest = { ok: true; request: ControlRequest } | { ok: false; error: string };

const FIELDS: Record<ControlRequest['op'], readonly string[]> = {
  apply: ['op', 'iface'],
  remove: ['op', 'iface'],
  status: ['op'],
};

function isOp(v: unknown): v is ControlRequest['op'] {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(FIELDS, v);
}

/** Parses one request line (without its newline). Anything unexpected is an error, never guessed at. */
export function parseControlRequest(line: string): ParsedRequest {
  if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) return { ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` };
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, error: 'request is not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, error: 'request is not a JSON object' };
  const obj = value as Record<string, unknown>;
  if (!isOp(obj.op)) return { ok: false, error: typeof obj.op === 'string' ? 'unknown op' : 'op missing or not a string' };
  const op = obj.op;
  const extra = Object.keys(obj).find((k) => !FIELDS[op].includes(k));
  if (extra !== undefined) return { ok: false, error: `unexpected field ${JSON.stringify(extra.slice(0, 40))} for ${op}` };
  if (op === 'status') return { ok: true, request: { op } };
  const iface = obj.iface;
  if (iface === undefined) {
    if (op === 'remove') return { ok: false, error: 'remove needs iface' };
    return { ok: true, request: { op } };
  }
  if (typeof iface !== 'string' || parseIfname(iface) === undefined) return { ok: false, error: 'iface is not an interface name' };
  return { ok: true, request: { op, iface } };
}

/** One reply line; `JSON.stringify` escapes line breaks, so a reply is always exactly one line. */
export function formatReply(reply: Record<string, unknown>): string {
  return JSON.stringify(reply) + '\n';
}
