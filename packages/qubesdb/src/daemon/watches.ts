// Watch registrations, matched like upstream: a watch on "X" fires only for a change of exactly
// "X"; a watch on "X/" fires for any changed path starting with "X/" (including "X/" itself
// when that directory is removed). Each registration is separate: registering a path twice
// gives two events per change, and UNWATCH removes one registration.
//
// Both kinds sit in maps keyed by the watched path, so a change costs one lookup for exact
// watches plus one per '/' in the changed path (a directory watch "X/" can only match at a
// '/' of the changed path), whatever the number of registrations: a client with thousands of
// directory watches on unrelated paths does not slow down every write (issue 13.4). Each
// client's registrations are also listed per client, for the per-client cap and a cheap
// disconnect.

export class WatchRegistry<C> {
  private readonly exact = new Map<string, C[]>();
  private readonly dirs = new Map<string, C[]>();
  /** Paths each client registered, one entry per registration. */
  private readonly byClient = new Map<C, string[]>();
  private total = 0;

  private table(path: string): Map<string, C[]> {
    return path.endsWith('/') ? this.dirs : this.exact;
  }

  add(path: string, client: C): void {
    const table = this.table(path);
    const list = table.get(path);
    if (list) list.push(client);
    else table.set(path, [client]);
    const mine = this.byClient.get(client);
    if (mine) mine.push(path);
    else this.byClient.set(client, [path]);
    this.total++;
  }

  /** Removes one registration of `path` by `client`; returns whether there was one. */
  remove(path: string, client: C): boolean {
    const table = this.table(path);
    const list = table.get(path);
    const i = list ? list.indexOf(client) : -1;
    if (i === -1) return false;
    list!.splice(i, 1);
    if (list!.length === 0) table.delete(path);
    const mine = this.byClient.get(client)!;
    mine.splice(mine.lastIndexOf(path), 1);
    if (mine.length === 0) this.byClient.delete(client);
    this.total--;
    return true;
  }

  /** Drops every registration of a client (on disconnect). */
  removeClient(client: C): void {
    const mine = this.byClient.get(client);
    if (!mine) return;
    this.byClient.delete(client);
    this.total -= mine.length;
    for (const path of new Set(mine)) {
      const table = this.table(path);
      const list = table.get(path);
      if (!list) continue;
      const kept = list.filter((c) => c !== client);
      if (kept.length === 0) table.delete(path);
      else table.set(path, kept);
    }
  }

  /** Calls `fn` once per registration matching a change of `changed`. */
  forEachMatch(changed: string, fn: (client: C) => void): void {
    // fn only queues output (a disconnect is handled later, on 'close'), so the lists do
    // not change while we walk them.
    const list = this.exact.get(changed);
    if (list) for (const c of list) fn(c);
    if (this.dirs.size === 0) return;
    for (let i = changed.indexOf('/'); i !== -1; i = changed.indexOf('/', i + 1)) {
      const dir = this.dirs.get(changed.slice(0, i + 1));
      if (dir) for (const c of dir) fn(c);
    }
  }

  /** Registrations of one client (the per-client cap). */
  countOf(client: C): number {
    return this.byClient.get(client)?.length ?? 0;
  }

  /** Number of registrations (for status and tests). */
  get size(): number {
    return this.total;
  }
}
