// nft transactions through libnftables in this process (koffi), instead of spawning `nft -f`.
// A spawn costs ~20 ms here (process start, library loading); a qube's update itself takes
// well under a few ms even with 1,000 other chains present, and the 20 ms target for one
// update is met only this way. Same parser, same single atomic batch per call as `nft -f`.
// Falls back to the `nft` binary when the library cannot be loaded.
import koffi from 'koffi';
import type { ApplyResult } from './nft.js';

export interface LibNftables {
  apply(script: string): Promise<ApplyResult>;
}

const CANDIDATES = ['libnftables.so.1', '/usr/lib/x86_64-linux-gnu/libnftables.so.1', '/usr/lib64/libnftables.so.1', '/usr/lib/libnftables.so.1'];

let loaded: LibNftables | null | undefined;

/** The in-process runner, or undefined when libnftables is not available. */
export function libNftables(): LibNftables | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
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
    const ctx = ctxNew(0);
    if (!ctx) continue;
    // Messages go to buffers we read, never to our stdout (which carries the JSON log).
    bufferOutput(ctx);
    bufferError(ctx);
    // One context, used by one call at a time: the engine's queue already serialises applies,
    // and this chain keeps that true for any caller.
    let queue: Promise<unknown> = Promise.resolve();
    loaded = {
      apply(script: string): Promise<ApplyResult> {
        const next = queue.then(
          () =>
            new Promise<ApplyResult>((resolve) => {
              try {
                // Off the main thread: a large initial load takes a few hundred ms.
                runCmd.async(ctx, script, (err: unknown, rc: number) => {
                  getOutput(ctx);
                  const msg = String(getError(ctx) ?? '');
                  if (err) resolve({ ok: false, error: String(err) });
                  else resolve(rc === 0 ? { ok: true } : { ok: false, error: msg.trim() || `libnftables error ${rc}` });
                });
              } catch (e) {
                resolve({ ok: false, error: `libnftables call failed: ${String((e as Error)?.message ?? e)}` });
              }
            }),
        );
        queue = next;
        return next;
      },
    };
    return loaded;
  }
  return undefined;
}
