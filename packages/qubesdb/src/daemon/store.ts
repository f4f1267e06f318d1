// The database: paths kept sorted in byte order (what upstream's strcmp-sorted list gives),
// found by binary search. Paths are validated ASCII, so JS string order equals strcmp order.
// Two parallel arrays instead of an array of objects: fewer allocations, and a prefix query is
// a lower-bound search plus a scan. Values are kept as latin1 strings (one char per byte, any
// byte but NUL): far smaller than a Buffer object each, and they live in the V8 heap.

export class SortedStore {
  private readonly keys: string[] = [];
  private readonly values: string[] = [];

  get size(): number {
    return this.keys.length;
  }

  /** Index of the first key >= `path`. */
  private lowerBound(path: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid]! < path) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  get(path: string): string | undefined {
    const i = this.lowerBound(path);
    return this.keys[i] === path ? this.values[i] : undefined;
  }

  /** Creates or replaces. The caller validates the path and value. */
  set(path: string, value: string): void {
    const i = this.lowerBound(path);
    if (this.keys[i] === path) {
      this.values[i] = value;
    } else {
      this.keys.splice(i, 0, path);
      this.values.splice(i, 0, value);
    }
  }

  /** Removes one key; returns whether it existed. */
  delete(path: string): boolean {
    const i = this.lowerBound(path);
    if (this.keys[i] !== path) return false;
    this.keys.splice(i, 1);
    this.values.splice(i, 1);
    return true;
  }

  /** Removes every key starting with `prefix`; returns how many. */
  deletePrefix(prefix: string): number {
    const start = this.lowerBound(prefix);
    let end = start;
    while (end < this.keys.length && this.keys[end]!.startsWith(prefix)) end++;
    if (end > start) {
      this.keys.splice(start, end - start);
      this.values.splice(start, end - start);
    }
    return end - start;
  }

  /** Calls `fn` for each key starting with `prefix` (raw prefix, no '/' boundary), ascending. */
  forEachWithPrefix(prefix: string, fn: (path: string, value: string) => void): void {
    for (let i = this.lowerBound(prefix); i < this.keys.length; i++) {
      const k = this.keys[i]!;
      if (!k.startsWith(prefix)) break;
      fn(k, this.values[i]!);
    }
  }

  /** Calls `fn` for every entry, descending (upstream's full-dump order). */
  forEachDescending(fn: (path: string, value: string) => void): void {
    for (let i = this.keys.length - 1; i >= 0; i--) fn(this.keys[i]!, this.values[i]!);
  }
}
