// The vifs Xen gives this qube (issue 13.2): its backend entries in xenstore,
// /local/domain/<self>/backend/vif/<frontend domid>/<devid>/{ip,mac,type,hotplug-status}.
// Only dom0's toolstack writes there, so these, with the kernel's own links, are what a start
// rebuilds the vif set from; the /qubes-vif/ QubesDB records (writable by any process of the
// qube) are feedback only. Every value is still validated by the caller like a hotplug event.
//
// On Xen the xenstore tools are used (one `xenstore-ls -f` for the whole tree). The lab's
// stand-in keeps each key as a file below a directory (packages/netns/src/xenstore.ts), read
// directly here.
import { readFile, stat } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runProcess as run } from './process.js';

export interface XenVif {
  vif: string;
  /** The backend path, as XENBUS_PATH names it. */
  path: string;
  ip: string;
  mac: string;
  type: string;
  /** 'connected' once a hotplug online succeeded. */
  hotplugStatus: string;
  /** The backend's `mtu` entry (raw, validated by the caller); absent when not written. */
  mtu?: string;
}

export const FAKE_XENSTORE_DIR = '/run/qubes-net-xenstore';
const NUM = /^(0|[1-9]\d{0,4})$/;
const XS_TIMEOUT_MS = 5_000;

/** Where to read from: an explicit stand-in directory, the lab's default one, or the tools. */
export function xenstoreDirFromEnv(explicit?: string): string | undefined {
  if (explicit) return explicit;
  if (process.env.QN_XENSTORE_DIR) return process.env.QN_XENSTORE_DIR;
  return existsSync(FAKE_XENSTORE_DIR) ? FAKE_XENSTORE_DIR : undefined;
}

function fromLeaves(base: string, leaves: Map<string, Map<string, string>>): XenVif[] {
  const out: XenVif[] = [];
  for (const [rel, kv] of leaves) {
    const [fe, dev] = rel.split('/') as [string, string];
    const mtu = kv.get('mtu');
    out.push({ vif: `vif${fe}.${dev}`, path: `${base}/${fe}/${dev}`, ip: kv.get('ip') ?? '', mac: kv.get('mac') ?? '', type: kv.get('type') ?? '', hotplugStatus: kv.get('hotplug-status') ?? '', ...(mtu !== undefined ? { mtu } : {}) });
  }
  return out.sort((a, b) => a.vif.localeCompare(b.vif));
}

const WANTED = new Set(['ip', 'mac', 'type', 'hotplug-status', 'mtu']);

/**
 * The stand-in directory: every /local/domain/<d>/backend/vif (the stand-in has no own domid).
 * Read synchronously, like procfs: small tmpfs files, a few hundred with many vifs, read in a
 * few ms; one async operation after the other took the start tens of ms on a busy machine.
 */
async function readFakeDir(dir: string): Promise<XenVif[]> {
  const out: XenVif[] = [];
  const list = (p: string) => {
    try {
      return readdirSync(p).filter((d) => NUM.test(d));
    } catch {
      return [];
    }
  };
  const readKey = (p: string) => {
    const st = statSync(p, { throwIfNoEntry: false });
    return st?.isFile() && st.size <= 4096 ? readFileSync(p, 'utf8').replace(/\n$/, '') : undefined;
  };
  for (const self of list(join(dir, 'local', 'domain'))) {
    const base = `/local/domain/${self}/backend/vif`;
    const root = join(dir, base);
    const leaves = new Map<string, Map<string, string>>();
    for (const fe of list(root)) {
      for (const dev of list(join(root, fe))) {
        const kv = new Map<string, string>();
        for (const k of WANTED) {
          const v = readKey(join(root, fe, dev, k));
          if (v !== undefined) kv.set(k, v);
        }
        leaves.set(`${fe}/${dev}`, kv);
      }
    }
    out.push(...fromLeaves(base, leaves));
  }
  return out;
}

/** Parses `xenstore-ls -f BASE` output ("PATH = \"VALUE\"" per line) below BASE. */
export function parseXenstoreLs(text: string, base: string): XenVif[] {
  const leaves = new Map<string, Map<string, string>>();
  for (const line of text.split('\n')) {
    const m = /^(\S+) = "(.*)"$/.exec(line);
    if (!m || !m[1]!.startsWith(`${base}/`)) continue;
    const parts = m[1]!.slice(base.length + 1).split('/');
    if (parts.length !== 3 || !NUM.test(parts[0]!) || !NUM.test(parts[1]!) || !WANTED.has(parts[2]!)) continue;
    // Escaped values (\" \\ \xNN) are never valid addresses, MACs or types: keep them as
    // they are and let validation refuse them.
    const rel = `${parts[0]}/${parts[1]}`;
    let kv = leaves.get(rel);
    if (!kv) leaves.set(rel, (kv = new Map()));
    kv.set(parts[2]!, m[2]!);
  }
  return fromLeaves(base, leaves);
}

async function readTools(): Promise<XenVif[]> {
  const dom = await run('xenstore-read', ['domid'], { allowFailure: true, timeoutMs: XS_TIMEOUT_MS });
  const self = dom.stdout.trim();
  if (dom.exitCode !== 0 || !NUM.test(self)) throw new Error(`xenstore-read domid: ${dom.stderr.trim() || self || `exit ${dom.exitCode}`}`);
  const base = `/local/domain/${self}/backend/vif`;
  const ls = await run('xenstore-ls', ['-f', base], { allowFailure: true, timeoutMs: XS_TIMEOUT_MS });
  if (ls.exitCode !== 0) {
    if (/not found|ENOENT|No such file/i.test(ls.stderr)) return [];
    throw new Error(`xenstore-ls -f ${base}: ${ls.stderr.trim() || `exit ${ls.exitCode}`}`);
  }
  return parseXenstoreLs(ls.stdout, base);
}

/** Every vif backend of this qube. Throws when xenstore cannot be read (the caller fails closed). */
export function readXenVifs(fakeDir: string | undefined): Promise<XenVif[]> {
  return fakeDir ? readFakeDir(fakeDir) : readTools();
}

const BACKEND_PATH = /^\/local\/domain\/(0|[1-9]\d{0,4})\/backend\/vif\/(0|[1-9]\d{0,4})\/(0|[1-9]\d{0,4})$/;

/**
 * One entry of a vif's backend directory (e.g. `mtu`), read when a hotplug event names the
 * path: from the stand-in directory, else with xenstore-read. Undefined when absent or when the
 * path is not a vif backend path (the event's XENBUS_PATH is untrusted).
 */
export async function readVifBackendEntry(fakeDir: string | undefined, xenbusPath: string, key: 'mtu'): Promise<string | undefined> {
  if (!BACKEND_PATH.test(xenbusPath)) return undefined;
  if (fakeDir) {
    const p = join(fakeDir, xenbusPath, key);
    const st = await stat(p).catch(() => undefined);
    return st?.isFile() && st.size <= 4096 ? (await readFile(p, 'utf8')).replace(/\n$/, '') : undefined;
  }
  const r = await run('xenstore-read', [`${xenbusPath}/${key}`], { allowFailure: true, timeoutMs: XS_TIMEOUT_MS }).catch(() => undefined);
  return r && r.exitCode === 0 ? r.stdout.replace(/\n$/, '') : undefined;
}
