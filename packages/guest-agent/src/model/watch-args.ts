// The argv of `qubes-net-watch` for an uplink (what `qubes-net-guest watch-args IFACE` prints),
// so that units and the lab take the key list from here instead of copying it.
import { WATCHED_PATHS } from './keys.js';

export interface WatchArgsOptions {
  /** The command that applies: e.g. ['/usr/bin/qubes-net-guest'] or [node, cli.js]. */
  cli: readonly string[];
  qubesdbRunDir?: string;
  debounceMs?: number;
  runAtStart?: boolean;
  /** apply's own options to pass on (--resolv-conf, --state-dir…), already validated. */
  applyArgs?: readonly string[];
}

/** Arguments after the program name: watches, then `--run -- CLI apply IFACE`. */
export function watchArgs(iface: string, opts: WatchArgsOptions): string[] {
  const args: string[] = [];
  if (opts.qubesdbRunDir !== undefined) args.push('--qdb-dir', opts.qubesdbRunDir);
  if (opts.debounceMs !== undefined) args.push('--debounce-ms', String(opts.debounceMs));
  if (opts.runAtStart) args.push('--run-at-start');
  for (const p of WATCHED_PATHS) args.push('--qdb', p);
  args.push('--link', iface);
  args.push('--run', '--', ...opts.cli, 'apply', iface);
  if (opts.qubesdbRunDir !== undefined) args.push('--qubesdb-run-dir', opts.qubesdbRunDir);
  args.push(...(opts.applyArgs ?? []));
  return args;
}
