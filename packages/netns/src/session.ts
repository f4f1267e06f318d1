// A session: the set of qubes one test file (or one lab run) creates, all named after the
// session id, all removed by exact name at destroy().
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger, run } from '@qubes-net/common';
import { createVethPair, deleteAllLinks, deleteLink, type LinkOptions } from './link.js';
import { createMountNamespace, makePrivateDir, mountsUnder, unmountAll, unmountAllSync } from './mounts.js';
import { assertIfName, assertQubeName, netnsName, newSessionId } from './names.js';
import { QUBE_LAYOUT, RUN_DIR } from './paths.js';
import { killNamespaceProcesses, killNamespaceProcessesSync, processStartTime } from './procs.js';
import { Qube } from './qube.js';
import { registerSession, unregisterSession } from './registry.js';
import { cleanupStaleOnce } from './stale.js';

// Library logs would clutter every other package's test output: warnings and errors only,
// unless QUBES_NET_NETNS_LOG_LEVEL says otherwise.
const log = createLogger('netns', (process.env.QUBES_NET_NETNS_LOG_LEVEL as 'info' | undefined) ?? 'warn');

/** What a session directory records so that cleanupStale() can tell a dead session from a live one. */
export interface SessionRecord {
  id: string;
  pid: number;
  /** Start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22): guards against pid reuse. */
  startTime: string;
}

/**
 * The qube's /rw and /etc/qubes need mount points on the host. If the host has no such
 * directory, an empty one is created (the only host change besides /run/qubes-net-ns); it is
 * left in place because other sessions may be using it.
 */
function ensureHostMountPoints(): void {
  for (const dir of ['/rw', '/etc/qubes']) {
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  }
}

export class NetnsSession {
  private readonly qubes = new Map<string, Qube>();
  /** Qubes being created: destroy() waits for them; exit handlers clean them up by name. */
  private readonly pending = new Map<string, Promise<Qube>>();
  private destroyed = false;

  private constructor(readonly id: string, readonly baseDir: string) {}

  get mntDir(): string {
    return join(this.baseDir, 'mnt');
  }

  static async create(label: string): Promise<NetnsSession> {
    await cleanupStaleOnce(log);
    const id = newSessionId(label);
    const s = new NetnsSession(id, join(RUN_DIR, id));
    await mkdir(RUN_DIR, { recursive: true, mode: 0o755 });
    await mkdir(s.baseDir, { mode: 0o755 }); // fails if the id already exists: never adopt a directory
    const record: SessionRecord = { id, pid: process.pid, startTime: processStartTime(process.pid) ?? '' };
    await writeFile(join(s.baseDir, 'session.json'), JSON.stringify(record) + '\n');
    registerSession(s);
    try {
      await mkdir(s.mntDir);
      await makePrivateDir(s.mntDir);
      await mkdir(join(s.baseDir, 'q'));
      ensureHostMountPoints();
    } catch (err) {
      await s.destroy();
      throw err;
    }
    log.info({ session: id }, 'session created');
    return s;
  }

  getQube(name: string): Qube | undefined {
    return this.qubes.get(name);
  }

  /** All qubes of the session, in creation order. */
  listQubes(): Qube[] {
    return [...this.qubes.values()];
  }

  async qube(name: string): Promise<Qube> {
    assertQubeName(name);
    if (this.destroyed) return Promise.reject(new Error(`session ${this.id} is destroyed`));
    if (this.qubes.has(name) || this.pending.has(name)) return Promise.reject(new Error(`qube ${name} already exists in session ${this.id}`));
    const p = this.createQube(name).finally(() => this.pending.delete(name));
    this.pending.set(name, p);
    return p;
  }

  private newQubeObject(name: string): Qube {
    return new Qube(name, netnsName(this.id, name), join(this.baseDir, 'q', name), join(this.mntDir, name));
  }

  private async createQube(name: string): Promise<Qube> {
    const q = this.newQubeObject(name);
    try {
      await mkdir(q.root);
      await Promise.all([
        mkdir(join(q.root, QUBE_LAYOUT.run)),
        mkdir(join(q.root, QUBE_LAYOUT.rw)),
        mkdir(join(q.root, QUBE_LAYOUT.etcQubes)),
        writeFile(join(q.root, QUBE_LAYOUT.resolvConf), ''),
        writeFile(q.mntFile, ''),
      ]);
      await run('ip', ['netns', 'add', q.netns]);
      await run('ip', ['-n', q.netns, 'link', 'set', 'lo', 'up']);
      await createMountNamespace(q.netns, q.mntFile, q.root);
    } catch (err) {
      await this.removeQubeResources(q).catch(() => {});
      throw err;
    }
    if (this.destroyed) {
      // destroy() ran meanwhile and did not see this qube yet
      await this.removeQubeResources(q);
      throw new Error(`session ${this.id} was destroyed while qube ${name} was being created`);
    }
    this.qubes.set(name, q);
    log.info({ session: this.id, qube: name, netns: q.netns }, 'qube created');
    return q;
  }

  async link(a: Qube, aIf: string, b: Qube, bIf: string, opts: LinkOptions = {}): Promise<void> {
    this.assertMine(a);
    this.assertMine(b);
    await createVethPair(a.netns, aIf, b.netns, bIf, opts);
    log.info({ session: this.id, qube: a.name, ifname: aIf, peerQube: b.name, peerIfname: bIf }, 'veth created');
  }

  async unlink(q: Qube, ifname: string): Promise<void> {
    this.assertMine(q);
    assertIfName(ifname);
    await deleteLink(q.netns, ifname);
  }

  async removeQube(name: string): Promise<void> {
    const pending = this.pending.get(name);
    if (pending) await pending.catch(() => {});
    const q = this.qubes.get(name);
    if (!q) return;
    await this.removeQubeResources(q);
    this.qubes.delete(name);
    log.info({ session: this.id, qube: name }, 'qube removed');
  }

  private async removeQubeResources(q: Qube): Promise<void> {
    for (const child of q.children) child.kill('SIGTERM');
    await killNamespaceProcesses([q.netnsFile, q.mntFile]);
    await deleteAllLinks(q.netns);
    const del = await run('ip', ['netns', 'del', q.netns], { allowFailure: true });
    if (del.exitCode !== 0 && existsSync(q.netnsFile)) throw new Error(`ip netns del ${q.netns}: ${del.stderr.trim()}`);
    await unmountAll(q.mntFile);
    await rm(q.mntFile, { force: true });
    await this.removeDir(q.root);
  }

  /** rm -rf, but never through a mount point (there should be none on the host side). */
  private async removeDir(dir: string): Promise<void> {
    await unmountAll(dir);
    if (mountsUnder(dir).length > 0) throw new Error(`refusing to remove ${dir}: still has mounts`);
    await rm(dir, { recursive: true, force: true });
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
    await Promise.allSettled([...this.pending.values()]);
    const errors: unknown[] = [];
    await Promise.all([...this.qubes.keys()].map((name) => this.removeQube(name).catch((err) => errors.push(err))));
    if (errors.length === 0) {
      await unmountAll(this.mntDir);
      await this.removeDir(this.baseDir).catch((err) => errors.push(err));
    }
    if (errors.length > 0) {
      log.error({ session: this.id, err: String(errors[0]) }, 'session cleanup incomplete');
      throw errors[0];
    }
    unregisterSession(this.id);
    log.info({ session: this.id }, 'session destroyed');
  }

  /** Synchronous teardown for exit handlers: kill, delete namespaces by exact name, unmount, remove. */
  destroySync(): void {
    this.destroyed = true;
    const names = new Set([...this.qubes.keys(), ...this.pending.keys()]);
    for (const name of names) {
      const q = this.qubes.get(name) ?? this.newQubeObject(name);
      for (const child of q.children) child.kill('SIGKILL');
      killNamespaceProcessesSync([q.netnsFile, q.mntFile]);
      if (existsSync(q.netnsFile)) spawnSync('ip', ['netns', 'del', q.netns], { stdio: 'ignore' });
      unmountAllSync(q.mntFile);
    }
    this.qubes.clear();
    unmountAllSync(this.mntDir);
    unmountAllSync(this.baseDir);
    if (mountsUnder(this.baseDir).length === 0) rmSync(this.baseDir, { recursive: true, force: true });
    unregisterSession(this.id);
  }

  private assertMine(q: Qube): void {
    if (this.qubes.get(q.name) !== q) throw new Error(`qube ${q.name} does not belong to session ${this.id}`);
  }
}
