// An in-memory QubesDB with upstream's prefix and watch semantics, for unit tests of pure
// logic (agents' readers and planners). Anything that talks to a kernel or a socket uses the
// real daemon instead.
import { QubesDBError, type QubesDB, type QubesDBWatch } from './api.js';

export class MemoryQubesDB implements QubesDB {
  private readonly data = new Map<string, string>();
  private readonly watchers = new Set<{ paths: readonly string[]; push: (p: string) => void }>();

  constructor(initial: Record<string, string> = {}) {
    for (const [k, v] of Object.entries(initial)) this.data.set(k, v);
  }

  async read(path: string): Promise<string | undefined> {
    return this.data.get(path);
  }

  async write(path: string, value: string): Promise<void> {
    if (!path.startsWith('/') || path.endsWith('/') || path.length > 63) throw new QubesDBError('write', path, 22);
    this.data.set(path, value);
    this.fire(path);
  }

  async rm(path: string): Promise<void> {
    if (path.endsWith('/')) {
      for (const k of [...this.data.keys()]) if (k.startsWith(path)) this.data.delete(k);
    } else {
      this.data.delete(path);
    }
    this.fire(path);
  }

  async list(prefix: string): Promise<string[]> {
    return [...this.data.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  async multiread(prefix: string): Promise<Map<string, string>> {
    const keys = await this.list(prefix);
    return new Map(keys.map((k) => [k, this.data.get(k)!]));
  }

  watch(paths: readonly string[]): QubesDBWatch {
    const queue: string[] = [];
    let wake: (() => void) | undefined;
    let closed = false;
    const entry = { paths, push: (p: string) => { queue.push(p); wake?.(); } };
    this.watchers.add(entry);
    const watchers = this.watchers;
    return {
      async close() { closed = true; watchers.delete(entry); wake?.(); },
      async *[Symbol.asyncIterator]() {
        while (!closed) {
          if (queue.length) { yield queue.shift()!; continue; }
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      },
    };
  }

  async close(): Promise<void> {
    this.watchers.clear();
  }

  /** Upstream's matching: exact for 'X', prefix for 'X/'. */
  private fire(changed: string): void {
    for (const w of this.watchers) {
      for (const p of w.paths) {
        if (p.endsWith('/') ? changed.startsWith(p) : changed === p) w.push(changed);
      }
    }
  }
}
