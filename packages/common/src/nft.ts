// nftables access: a whole change is one `nft -f -` transaction, which the kernel applies
// atomically (all or nothing).
import { run, CommandError } from './exec.js';

export interface NftOptions {
  netns?: string;
}

function wrap(args: string[], opts: NftOptions): [string, string[]] {
  return opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'nft', ...args]] : ['nft', args];
}

/** Loads `script` atomically. Throws CommandError with nft's message when it is rejected. */
export async function nftApply(script: string, opts: NftOptions = {}): Promise<void> {
  const [cmd, args] = wrap(['-f', '-'], opts);
  await run(cmd, args, { input: script });
}

/** Checks a script without applying it (`nft -c`). */
export async function nftCheck(script: string, opts: NftOptions = {}): Promise<{ ok: boolean; error: string }> {
  const [cmd, args] = wrap(['-c', '-f', '-'], opts);
  const res = await run(cmd, args, { input: script, allowFailure: true });
  return { ok: res.exitCode === 0, error: res.stderr };
}

/** `nft -j list …` parsed; undefined when the object does not exist. */
export async function nftListJson(what: readonly string[], opts: NftOptions = {}): Promise<{ nftables: Record<string, any>[] } | undefined> {
  const [cmd, args] = wrap(['-j', 'list', ...what], opts);
  try {
    const { stdout } = await run(cmd, args);
    return JSON.parse(stdout);
  } catch (err) {
    if (err instanceof CommandError && /No such file or directory|does not exist/.test(err.stderr)) return undefined;
    throw err;
  }
}

/** Whether this kernel supports nftables flowtables (it may not: then forward without them). */
export async function nftSupportsFlowtables(opts: NftOptions = {}): Promise<boolean> {
  // nft 1.0.6 rejects the one-line form of a flowtable block, hence one statement per line.
  const probe = 'table inet qubes-net-probe {\n  flowtable f {\n    hook ingress priority filter\n    devices = { lo }\n  }\n}\n';
  const res = await nftCheck(probe, opts);
  return res.ok;
}

/** Quotes a string for an nft script (interface names, comments). Rejects what needs escaping. */
export function nftQuote(value: string): string {
  if (!/^[A-Za-z0-9_.:@\-/ ]*$/.test(value)) throw new Error(`refusing to put ${JSON.stringify(value)} into an nft script`);
  return `"${value}"`;
}
