// The control socket protocol (docs/contracts.md): one JSON object per line each way.
// Requests are validated here; the vif fields themselves are validated by the driver.

export const DEFAULT_SOCKET = '/run/qubes-net/driver.sock';
export const MAX_REQUEST_BYTES = 64 * 1024;

export type Request =
  | { op: 'online' | 'offline'; vif: unknown; ips?: unknown; mac?: unknown; type?: unknown; xenbusPath?: unknown }
  | { op: 'sync'; reason?: unknown }
  | { op: 'dns-changed' }
  | { op: 'status' }
  | { op: 'reconcile' };

export function parseRequest(line: string): { ok: true; request: Request } | { ok: false; error: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return { ok: false, error: 'request is not JSON' };
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return { ok: false, error: 'request is not a JSON object' };
  const r = doc as Record<string, unknown>;
  switch (r.op) {
    case 'online':
    case 'offline':
      return { ok: true, request: { op: r.op, vif: r.vif, ips: r.ips, mac: r.mac, type: r.type, xenbusPath: r.xenbusPath } };
    case 'sync':
      return { ok: true, request: { op: 'sync', reason: r.reason } };
    case 'dns-changed':
    case 'status':
    case 'reconcile':
      return { ok: true, request: { op: r.op } };
    default:
      return { ok: false, error: `unknown op ${JSON.stringify(String(r.op)).slice(0, 40)}` };
  }
}

/** Serialises a reply with `ok` first, which the C client relies on. */
export function formatReply(reply: { ok: boolean } & Record<string, unknown>): string {
  const { ok, ...rest } = reply;
  return JSON.stringify({ ok, ...rest }) + '\n';
}
