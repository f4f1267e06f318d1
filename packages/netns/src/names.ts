// Names of sessions, qubes and interfaces. Everything this package creates on the host is
// named from these, and cleanup removes by exact name, so the rules are strict.
import { randomBytes } from 'node:crypto';

/** Prefix of every session id (and so of every network namespace this package creates). */
export const SESSION_PREFIX = 'qn-';

const QUBE_NAME_RE = /^[a-z0-9-]{1,20}$/;
const SESSION_ID_RE = /^qn-[a-z0-9-]{1,16}-[0-9a-f]{6}$/;
// Linux interface names: at most 15 bytes, no '/', no whitespace, not '.' or '..'.
const IFNAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;

export function isQubeName(name: string): boolean {
  return typeof name === 'string' && QUBE_NAME_RE.test(name);
}

export function assertQubeName(name: string): void {
  if (!isQubeName(name)) throw new Error(`invalid qube name ${JSON.stringify(name)}: want [a-z0-9-]{1,20}`);
}

export function isSessionId(id: string): boolean {
  return SESSION_ID_RE.test(id);
}

export function assertIfName(name: string): void {
  if (typeof name !== 'string' || !IFNAME_RE.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid interface name ${JSON.stringify(name)}: want [A-Za-z0-9_.@-]{1,15}`);
  }
}

/**
 * Turns a free-form label into the middle of a session id. It is cut to 16 characters so
 * that unix socket paths below a qube's /run stay under the 108-byte limit.
 */
export function sanitizeLabel(label: string): string {
  const clean = String(label).toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 16).replace(/-+$/, '');
  return clean || 'test';
}

export function newSessionId(label: string): string {
  return `${SESSION_PREFIX}${sanitizeLabel(label)}-${randomBytes(3).toString('hex')}`;
}

/** The `ip netns` name of a qube. */
export function netnsName(sessionId: string, qubeName: string): string {
  return `${sessionId}-${qubeName}`;
}
