// Tiny argument parsing for the qn-* probes: positional arguments plus `--flag value` options.
export interface ParsedArgs {
  positional: string[];
  options: Map<string, string[]>;
  flags: Set<string>;
}

export function parseArgs(argv: readonly string[], withValue: readonly string[], booleans: readonly string[] = []): ParsedArgs {
  const out: ParsedArgs = { positional: [], options: new Map(), flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (withValue.includes(a)) {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      out.options.set(a, [...(out.options.get(a) ?? []), v]);
    } else if (booleans.includes(a)) out.flags.add(a);
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else out.positional.push(a);
  }
  return out;
}

export function intOption(args: ParsedArgs, name: string, dflt: number): number {
  const v = args.options.get(name)?.at(-1);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} wants a non-negative integer, got ${v}`);
  return n;
}

export function usageExit(tool: string, usage: string, err: unknown): never {
  process.stderr.write(`${tool}: ${err instanceof Error ? err.message : String(err)}\nusage: ${usage}\n`);
  process.exit(2);
}
