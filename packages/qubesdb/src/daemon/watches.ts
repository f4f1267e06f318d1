// Watch registrations, matched like upstream: a watch on "X" fires only for a change of exactly
// "X"; a watch on "X/" fires for any changed path starting with "X/" (including "X/" itself
// when that directory is removed). Each registration is separate: registering a path twice
// gives two events per change, and UNWATCH removes one registration.
//
// Exact watches sit in a map (one lookup per change); directory watches in a list scanned per
// change, since there are few of them.

export class WatchRegistry<C> {
  private readonly exact = new Map<string, C[]>();
  private readonly dirs: { prefix: string; client: C }[] = [];

  add(path: string, client: C): void {
    if (path.endsWith('/')) {
      this.dirs.push({ prefix: path, client });
    } else {
      const list = this.exact.get(path);
      if (list) list.push(client);
      else this.exact.set(path, [client]);
    }
  }

  /** Removes one registration of `path` by `client`; returns whether there was one. */
  remove(path: string, client: C): boolean {
    if (path.endsWith('/')) {
      const i = this.dirs.findIndex((w) => w.prefix === path && w.client === client);
      if (i === -1) return false;
      this.dirs.splice(i, 1);
      return true;
    }
    const list = this.exact.get(path);
    const i = list ? list.indexOf(client) : -1;
    if (i === -1) return false;
    list!.splice(i, 1);
    if (list!.length === 0) this.exact.delete(path);
    return true;
  }

  /** Drops every registration of a client (on disconnect). */
  removeClient(client: C): void {
    for (const [path, list] of this.exact) {
      const kept = list.filter((c) => c !== client);
      if (kept.length === 0) this.exact.delete(path);
      else if (kept.length !== list.length) this.exact.set(path, kept);
    }
    for (let i = this.dirs.length - 1; i >= 0; i--) if (this.dirs[i]!.client === client) this.dirs.splice(i, 1);
  }

  /** Calls `fn` once per registration matching a change of `changed`. */
  forEachMatch(changed: string, fn: (client: C) => void): void {
    const list = this.exact.get(changed);
    // fn only queues output (a disconnect is handled later, on 'close'), so the lists do
    // not change while we walk them.
    if (list) for (const c of list) fn(c);
    for (const w of this.dirs) if (changed.startsWith(w.prefix)) fn(w.client);
  }

  /** Number of registrations (for status and tests). */
  get size(): number {
    let n = this.dirs.length;
    for (const list of this.exact.values()) n += list.length;
    return n;
  }
}
