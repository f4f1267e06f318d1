// The one control protocol of the network agent (docs/runtime-shape.md): a unix stream
// socket, one JSON request line per connection, one JSON reply line. The C clients
// (qubes-net-hotplug, qubes-net-watch --notify) speak it too: the ops and reply codes below are
// rendered into native-bindings/src/ctl-protocol.h by scripts/gen-ctl-header.mjs, so both
// sides come from this one file. Pure: no I/O, cheap to import on one-shot paths.
import { EXIT, type ExitCode } from '../exit-codes.js';

export const DEFAULT_AGENT_SOCKET = '/run/qubes-net/agent.sock';
/** Longest request line accepted (bytes before the newline); a vif event is ~300 bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Longest reply a C client has to buffer. */
export const MAX_REPLY_BYTES = 64 * 1024;

export const OPS = ['online', 'offline', 'sync', 'status', 'reconcile'] as const;
export type Op = (typeof OPS)[number];

/** Machine-readable reply codes, each with the exit code a CLI relaying it uses. */
export const CODES = {
  ok: EXIT.ok,
  'bad-request': EXIT.usage,
  'invalid-input': EXIT.invalidConfig,
  'kernel-refused': EXIT.kernel,
  'qubesdb-error': EXIT.qubesdb,
  stopping: EXIT.noReply,
  timeout: EXIT.noReply,
  internal: EXIT.failure,
} as const satisfies Record<string, ExitCode>;
export type Code = keyof typeof CODES;

export type VifRequest = {
  op: 'online' | 'offline';
  vif: string;
  /** Addresses from xenstore's backend `ip` (raw strings: the driver validates them). */
  ips: string[];
  mac: string;
  type?: string;
  xenbusPath?: string;
};
export type Request =
  | VifRequest
  | { op: 'sync'; reason: string }
  | { op: 'status' }
  | { op: 'reconcile' };

export interface Reply {
  ok: boolean;
  code: Code;
  message: string;
  details: Record<string, unknown>;
}

export type Parsed = { ok: true; request: Request } | { ok: false; reply: Reply };

const FIELDS: Record<Op, { required: readonly string[]; optional: readonly string[] }> = {
  online: { required: ['vif'], optional: ['ips', 'mac', 'type', 'xenbusPath'] },
  offline: { required: ['vif'], optional: ['ips', 'mac', 'type', 'xenbusPath'] },
  sync: { required: [], optional: ['reason'] },
  status: { required: [], optional: [] },
  reconcile: { required: [], optional: [] },
};

const MAX_FIELD = 512;
const MAX_IPS = 32;

export function reply(code: Code, message: string, details: Record<string, unknown> = {}): Reply {
  return { ok: code === 'ok', code, message, details };
}

function bad(message: string): Parsed {
  return { ok: false, reply: reply('bad-request', message) };
}

function isOp(v: unknown): v is Op {
  return typeof v === 'string' && (OPS as readonly string[]).includes(v);
}

/** A printable one-line string of bounded length, or undefined. */
function text(v: unknown, max = MAX_FIELD): string | undefined {
  if (typeof v !== 'string' || v.length > max) return undefined;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) return undefined;
  return v;
}

/**
 * Parses one request line (without its newline). Unknown ops and fields, wrong types, control
 * characters and over-long values are refused, never guessed at; the vif's values stay strings
 * here and are validated as addresses by the driver, which reports them per field.
 */
export function parseRequest(line: string): Parsed {
  if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) return bad(`request longer than ${MAX_REQUEST_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return bad('request is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return bad('request is not a JSON object');
  const r = doc as Record<string, unknown>;
  if (!isOp(r.op)) return bad(typeof r.op === 'string' ? `unknown op ${JSON.stringify(r.op.slice(0, 40))}` : 'op missing or not a string');
  const op = r.op;
  const spec = FIELDS[op];
  for (const k of Object.keys(r)) {
    if (k !== 'op' && !spec.required.includes(k) && !spec.optional.includes(k)) return bad(`unexpected field ${JSON.stringify(k.slice(0, 40))} for ${op}`);
  }
  for (const k of spec.required) if (r[k] === undefined) return bad(`${op} needs ${k}`);
  switch (op) {
    case 'online':
    case 'offline': {
      const vif = text(r.vif, 64);
      if (!vif) return bad('vif is not a short printable string');
      let ips: string[] = [];
      if (r.ips !== undefined) {
        // The C client sends an array; a space-separated string (xenstore's form) is accepted too.
        const raw = typeof r.ips === 'string' ? r.ips.split(/[ \t]+/).filter(Boolean) : r.ips;
        if (!Array.isArray(raw) || raw.length > MAX_IPS) return bad(`ips must be an array of at most ${MAX_IPS} strings`);
        const checked = raw.map((x) => text(x, 64));
        if (checked.some((x) => x === undefined)) return bad('ips holds a value that is not a short printable string');
        ips = checked as string[];
      }
      const mac = r.mac === undefined ? '' : text(r.mac, 64);
      if (mac === undefined) return bad('mac is not a short printable string');
      const out: VifRequest = { op, vif, ips, mac };
      if (r.type !== undefined && r.type !== '') {
        const type = text(r.type, 32);
        if (type === undefined) return bad('type is not a short printable string');
        out.type = type;
      }
      if (r.xenbusPath !== undefined && r.xenbusPath !== '') {
        const xp = text(r.xenbusPath, 400);
        if (xp === undefined || !xp.startsWith('/')) return bad('xenbusPath is not an absolute path');
        out.xenbusPath = xp;
      }
      return { ok: true, request: out };
    }
    case 'sync': {
      const reason = r.reason === undefined ? 'sync' : text(r.reason, 200);
      if (reason === undefined) return bad('reason is not a short printable string');
      return { ok: true, request: { op, reason } };
    }
    default:
      return { ok: true, request: { op } };
  }
}

/** One reply line, `ok` first (the C clients check its prefix) and exactly one line. */
export function formatReply(r: Reply): string {
  return JSON.stringify({ ok: r.ok, code: r.code, message: r.message, details: r.details }) + '\n';
}

/** Parses a reply line strictly; a line that is not a reply is reported as one with code internal. */
export function parseReply(line: string): Reply {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return reply('internal', 'reply is not JSON');
  }
  const r = doc as Partial<Reply> | null;
  if (!r || typeof r !== 'object' || typeof r.ok !== 'boolean' || typeof r.code !== 'string' || !(r.code in CODES) || typeof r.message !== 'string') {
    return reply('internal', 'reply does not have the {ok, code, message, details} shape');
  }
  const details = r.details && typeof r.details === 'object' && !Array.isArray(r.details) ? r.details : {};
  return { ok: r.ok && r.code === 'ok', code: r.code as Code, message: r.message, details };
}

/** The exit code a command line relaying this reply exits with. */
export function exitCodeOf(r: Reply): ExitCode {
  return CODES[r.code];
}
