// libnftables in this process (koffi), instead of spawning `nft`. A spawn costs ~20 ms here
// (process start, library loading); a qube's update itself takes well under a few ms even
// with 1,000 other chains present. Same parser, same single atomic batch per call as `nft -f`.
// Calls run on koffi's worker thread (`.async`), so a large load (hundreds of ms) never
// blocks the event loop. One context per purpose, used by one call at a time.
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
  /** Runs a list command with JSON output. */
  runJson(text: string): Promise<LibNftResult>;
}

const CANDIDATES = ['libnftables.so.1', '/usr/lib/x86_64-linux-gnu/libnftables.so.1', '/usr/lib/aarch64-linux-gnu/libnftables.so.1', '/usr/lib64/libnftables.so.1', '/usr/lib/libnftables.so.1'];
// nft_ctx_output_set_flags bits (libnftables.h): NFT_CTX_OUTPUT_HANDLE | NFT_CTX_OUTPUT_JSON.
const OUTPUT_HANDLE = 1 << 3;
const OUTPUT_JSON = 1 << 4;

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
    const setFlags = lib.func('void nft_ctx_output_set_flags(void *ctx, unsigned int flags)');
    const makeCtx = (flags: number) => {
      const ctx = ctxNew(0);
      if (!ctx) return undefined;
      // Messages go to buffers we read, never to our stdout (which carries the JSON log).
      bufferOutput(ctx);
      bufferError(ctx);
      if (flags) setFlags(ctx, flags);
      return ctx;
    };
    const writeCtx = makeCtx(0);
    const listCtx = makeCtx(OUTPUT_JSON | OUTPUT_HANDLE);
    if (!writeCtx || !listCtx) continue;
    const serial = (ctx: unknown) => {
      let queue: Promise<unknown> = Promise.resolve();
      return (text: string): Promise<LibNftResult> => {
        const next = queue.then(
          () =>
            new Promise<LibNftResult>((resolve) => {
              try {
                runCmd.async(ctx, text, (err: unknown, rc: number) => {
                  const output = String(getOutput(ctx) ?? '');
                  const error = String(getError(ctx) ?? '');
                  if (err) resolve({ rc: -1, output, error: `libnftables call failed: ${String(err)}`, callFailed: true });
                  else resolve({ rc, output, error });
                });
              } catch (e) {
                resolve({ rc: -1, output: '', error: `libnftables call failed: ${String((e as Error)?.message ?? e)}`, callFailed: true });
              }
            }),
        );
        queue = next;
        return next;
      };
    };
    loaded = { run: serial(writeCtx), runJson: serial(listCtx) };
    return loaded;
  }
  return undefined;
}
