// A full garbage collection once the daemon goes idle after a burst. A burst (hundreds of
// vif events, a reconcile reading every link and set) allocates megabytes of short-lived
// objects; V8 would keep the pages it grew into for a long while, and the provider's memory
// budget is tight (sys-net runs in ~300 MB). Collecting when nothing else is happening costs
// a few milliseconds, off the hotplug path, and lets V8 return those pages. Buffers of
// hundreds of simultaneous control connections are malloc'ed outside the JS heap; glibc
// keeps freed memory in the middle of its heap until malloc_trim() hands it back.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createRequire } from 'node:module';

let collect: (() => void) | undefined | null;

function gcFunction(): (() => void) | null {
  if (collect !== undefined) return collect;
  try {
    setFlagsFromString('--expose-gc');
    const fn = runInNewContext('gc') as unknown;
    collect = typeof fn === 'function' ? (fn as () => void) : null;
  } catch {
    collect = null;
  }
  return collect;
}

let trim: (() => void) | undefined | null;

/** glibc's malloc_trim(0) through koffi (already loaded for QubesDB); a no-op elsewhere. */
function mallocTrim(): (() => void) | null {
  if (trim !== undefined) return trim;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as { load(lib: string): { func(sig: string): (pad: number) => number } };
    const fn = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
    trim = () => void fn(0);
  } catch {
    trim = null;
  }
  return trim;
}

export class IdleCollector {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly idleMs = 1000) {}

  /** Call after work; the collection runs once nothing more came for `idleMs`. */
  touch(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      gcFunction()?.();
      mallocTrim()?.();
    }, this.idleMs);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}
