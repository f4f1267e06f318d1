// libnftables in this process (koffi), instead of spawning `nft`. A spawn costs ~20 ms here
// (process start, library loading); a qube's update itself takes well under a few ms even
// with 1,000 other chains present. Same parser, same single atomic batch per call as `nft -f`.
// Calls run on koffi's worker thread (`.async`), so a large load (hundreds of ms) never
// blocks the event loop.
//
// A fresh context for every call (~0.05 ms), freed after it, and one call at a time in the
// whole process. A reused context keeps libnftables' ruleset cache between calls; once the
// ruleset changed underneath it (our other context wrote, another process wrote), nftables
// 1.1.3 (Debian 13) read freed cache objects and the agent died of SIGSEGV inside
// nft_run_cmd_from_buffer while listing a chain. The library is not thread-safe either, and
// koffi's .async may put two calls on two threads at once.
import { createRequire } from 'node:module';

export interface LibNftResult {
  rc: number;
  output: string;
  error: string;
  /** The call itself failed (koffi), as opposed to nft refusing the commands. */
  callFailed?: boolean;
}

export interface LibNftables {
  /** Runs nft commands (text) as one batch. */
  run(text: string): Promise<LibNftResult>;
}

const CANDIDATES = ['libnftables.so.1', '/usr/lib/x86_64-linux-gnu/libnftables.so.1', '/usr/lib/aarch64-linux-gnu/libnftables.so.1', '/usr/lib64/libnftables.so.1', '/usr/lib/libnftables.so.1'];

let loaded: LibNftables | null | undefined;

/** The in-process runner, or undefined when libnftables (or koffi) is not available. */
export function libNftables(): LibNftables | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  let koffi: typeof import('koffi');
  try {
    // Loaded lazily: one-shot paths that never write nft do not pay for koffi.
    koffi = createRequire(import.meta.url)('koffi');
  } catch {
    return undefined;
  }
  for (const name of CANDIDATES) {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(name);
    } catch {
      continue;
    }
    const ctxNew = lib.func('void *nft_ctx_new(uint32_t flags)');
    const runCmd = lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
    const bufferOutput = lib.func('int nft_ctx_buffer_output(void *ctx)');
    const bufferError = lib.func('int nft_ctx_buffer_error(void *ctx)');
    const getOutput = lib.func('const char *nft_ctx_get_output_buffer(void *ctx)');
    const getError = lib.func('const char *nft_ctx_get_error_buffer(void *ctx)');
    const ctxFree = lib.func('void nft_ctx_free(void *ctx)');
    const makeCtx = () => {
      const ctx = ctxNew(0);
      if (!ctx) return undefined;
      // Messages go to buffers we read, never to our stdout (which carries the JSON log).
      bufferOutput(ctx);
      bufferError(ctx);
      return ctx;
    };
    // The library must be usable at all before we choose it over `nft`.
    const probe = makeCtx();
    if (!probe) continue;
    ctxFree(probe);
    let queue: Promise<unknown> = Promise.resolve();
    const run = (text: string): Promise<LibNftResult> => {
      const next = queue.then(
        () =>
          new Promise<LibNftResult>((resolve) => {
            const ctx = makeCtx();
            if (!ctx) {
              resolve({ rc: -1, output: '', error: 'libnftables: cannot create a context', callFailed: true });
              return;
            }
            try {
              runCmd.async(ctx, text, (err: unknown, rc: number) => {
                const output = String(getOutput(ctx) ?? '');
                const error = String(getError(ctx) ?? '');
                ctxFree(ctx);
                if (err) resolve({ rc: -1, output, error: `libnftables call failed: ${String(err)}`, callFailed: true });
                else resolve({ rc, output, error });
              });
            } catch (e) {
              ctxFree(ctx);
              resolve({ rc: -1, output: '', error: `libnftables call failed: ${String((e as Error)?.message ?? e)}`, callFailed: true });
            }
          }),
      );
      queue = next;
      return next;
    };
    loaded = { run };
    return loaded;
  }
  return undefined;
}
