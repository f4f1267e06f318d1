#!/usr/bin/env node
// qubes-net-firewall: run | render <ip> | status [--json] | skeleton
import { createLogger, forLog, packageVersion, requireRootOrExit } from '@qubes-net/common';
import { openQubesDB } from '@qubes-net/qubesdb';
import { runDaemon, defaultDaemonOptions, DEFAULT_PIDFILE, DEFAULT_STATUS_FILE, DEFAULT_RESOLV_CONF } from './daemon.js';
import { renderQube, readRulesFile } from './render.js';
import { collectStatus, formatStatus } from './status.js';
import { readResolvConf, resolveHost, DEFAULT_RESOLVE } from './kernel/dns.js';
import { firewallSkeleton } from './model/skeleton.js';

const HELP = `Usage: qubes-net-firewall <command> [options]

Options:
  --version           print the version
  -h, --help          this text

Commands:
  run                 the daemon: applies dom0's per-qube rules (/qubes-firewall/<ip>) to
                      nftables and reports back in QubesDB. SIGHUP reloads (re-reads
                      resolv.conf, re-resolves names, re-applies every qube).
  render <ip>         print the nft transaction that would be applied for <ip>, without
                      applying it
  status [--json]     what the kernel holds and what the daemon last applied (exit 3 when
                      something is wrong: tables missing, daemon not running, drift)
  skeleton            print the tables' base script (what the driver loads before forwarding;
                      objects only: forward's own rules are added once, when the firewall starts)

Options (run):
  --pidfile PATH          default ${DEFAULT_PIDFILE}
  --status-file PATH      default ${DEFAULT_STATUS_FILE}
  --resolv-conf PATH      this VM's resolvers (dns-addr, and the TTL of dsthost names, which
                          themselves go through the system resolver); default ${DEFAULT_RESOLV_CONF}
  --qubesdb-dir DIR       directory of QubesDB's sockets (QUBESDB_RUN_DIR)
  --hooks-etc DIR, --hooks-rw DIR, --user-script PATH   user hook locations
  --custom-persist-file PATH   flag file that skips the /rw hooks
  --no-hooks              do not run user hooks
  --nft-binary            spawn nft for every change (default: libnftables in-process if present)
  --hook-wait-ms N        kill a user hook (and what it started) after N ms (default 120000)
  --writing-timeout-ms N  stop waiting for dom0's marker after a rule change (default 10000)
  --dns-timeout-ms N      per-try timeout of name lookups (default ${DEFAULT_RESOLVE.timeoutMs})
  --min-refresh-s N, --max-refresh-s N, --retry-refresh-s N   re-resolution bounds (a name
                          that did not resolve is retried after 1 s, doubling up to
                          --retry-refresh-s; at once on a DNS/uplink change)
Options (render): --resolv-conf PATH, --qubesdb-dir DIR, --rules-file FILE (JSON object
  {"policy":"drop","0000":"action=accept proto=icmp"} instead of QubesDB)
Options (status): --json, --pidfile PATH, --status-file PATH

Stopping the daemon (SIGTERM) and a crash both leave every rule in force: traffic of a qube
stays filtered, and a qube without rules stays blocked. To remove the firewall entirely:
  nft delete table ip qubes-firewall; nft delete table ip6 qubes-firewall
(with the driver still forwarding, that lets every qube's traffic through unfiltered).
`;

interface Parsed {
  command: string | undefined;
  positional: string[];
  flags: Map<string, string | true>;
}

const VALUE_FLAGS = new Set([
  'pidfile', 'status-file', 'resolv-conf', 'qubesdb-dir', 'hooks-etc', 'hooks-rw', 'user-script', 'custom-persist-file',
  'dns-timeout-ms', 'hook-wait-ms', 'writing-timeout-ms', 'min-refresh-s', 'max-refresh-s', 'retry-refresh-s', 'rules-file',
]);
const BOOL_FLAGS = new Set(['json', 'no-hooks', 'help', 'version', 'nft-binary']);

function parseArgs(argv: string[]): Parsed | string {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h') {
      flags.set('help', true);
      continue;
    }
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    if (BOOL_FLAGS.has(name)) flags.set(name, true);
    else if (VALUE_FLAGS.has(name)) {
      const v = inline ?? argv[++i];
      if (v === undefined) return `--${name} needs a value`;
      flags.set(name, v);
    } else return `unknown option --${name}`;
  }
  return { command: positional.shift(), positional, flags };
}

function str(p: Parsed, name: string, fallback: string): string {
  const v = p.flags.get(name);
  return typeof v === 'string' ? v : fallback;
}

function positiveInt(p: Parsed, name: string, fallback: number): number {
  const v = p.flags.get(name);
  if (typeof v !== 'string') return fallback;
  if (!/^[1-9]\d{0,8}$/.test(v)) throw new Error(`--${name} must be a positive integer`);
  return Number(v);
}

async function main(argv: string[]): Promise<number> {
  const p = parseArgs(argv);
  if (typeof p === 'string') {
    process.stderr.write(`${p}\n\n${HELP}`);
    return 2;
  }
  if (p.flags.has('version')) {
    process.stdout.write(`qubes-net-firewall ${packageVersion(import.meta.url)}\n`);
    return 0;
  }
  if (p.flags.has('help') || p.command === 'help' || p.command === undefined) {
    process.stdout.write(HELP);
    return p.command === undefined && !p.flags.has('help') ? 2 : 0;
  }
  const qubesdbOpts = p.flags.has('qubesdb-dir') ? { runDir: str(p, 'qubesdb-dir', '') } : {};
  switch (p.command) {
    case 'run': {
      requireRootOrExit('qubes-net-firewall run');
      const log = createLogger('firewall');
      const opts = defaultDaemonOptions(log);
      opts.pidfile = str(p, 'pidfile', opts.pidfile);
      opts.statusFile = str(p, 'status-file', opts.statusFile);
      opts.resolvConf = str(p, 'resolv-conf', opts.resolvConf);
      opts.customPersistFile = str(p, 'custom-persist-file', opts.customPersistFile);
      opts.qubesdb = qubesdbOpts;
      opts.hooks = p.flags.has('no-hooks')
        ? undefined
        : { etcDir: str(p, 'hooks-etc', opts.hooks!.etcDir), rwDir: str(p, 'hooks-rw', opts.hooks!.rwDir), userScript: str(p, 'user-script', opts.hooks!.userScript) };
      if (p.flags.has('nft-binary')) opts.nftBinary = true;
      if (p.flags.has('hook-wait-ms')) opts.hookWaitMs = positiveInt(p, 'hook-wait-ms', 120_000);
      if (p.flags.has('writing-timeout-ms')) opts.writingTimeoutMs = positiveInt(p, 'writing-timeout-ms', 10_000);
      opts.resolve = { ...opts.resolve, timeoutMs: positiveInt(p, 'dns-timeout-ms', opts.resolve.timeoutMs) };
      opts.refresh = {
        minMs: positiveInt(p, 'min-refresh-s', opts.refresh.minMs / 1000) * 1000,
        maxMs: positiveInt(p, 'max-refresh-s', opts.refresh.maxMs / 1000) * 1000,
        retryMs: positiveInt(p, 'retry-refresh-s', opts.refresh.retryMs / 1000) * 1000,
        ...(opts.refresh.firstRetryMs !== undefined ? { firstRetryMs: opts.refresh.firstRetryMs } : {}),
      };
      return runDaemon(opts);
    }
    case 'render': {
      const ip = p.positional[0];
      if (!ip || p.positional.length > 1) {
        process.stderr.write('usage: qubes-net-firewall render <ip> [--rules-file FILE] [--resolv-conf PATH]\n');
        return 2;
      }
      const servers = (await readResolvConf(str(p, 'resolv-conf', DEFAULT_RESOLV_CONF))).servers;
      const rulesFile = p.flags.get('rules-file');
      const db = typeof rulesFile === 'string' ? undefined : openQubesDB(qubesdbOpts);
      try {
        const out = await renderQube({
          ip,
          servers,
          resolve: (h, f, s) => resolveHost(h, f, s, DEFAULT_RESOLVE),
          ...(typeof rulesFile === 'string' ? { rules: await readRulesFile(rulesFile) } : {}),
          ...(db ? { db } : {}),
        });
        if (!out.ok) {
          process.stderr.write(`${out.error}\n`);
          return 1;
        }
        process.stdout.write(out.text);
        return 0;
      } finally {
        await db?.close();
      }
    }
    case 'status': {
      const report = await collectStatus({ pidfile: str(p, 'pidfile', DEFAULT_PIDFILE), statusFile: str(p, 'status-file', DEFAULT_STATUS_FILE) });
      process.stdout.write(p.flags.has('json') ? JSON.stringify(report, null, 2) + '\n' : formatStatus(report));
      return report.problems.length ? 3 : 0;
    }
    case 'skeleton':
      process.stdout.write(firewallSkeleton());
      return 0;
    default:
      process.stderr.write(`unknown command ${forLog(p.command, 40)}\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`qubes-net-firewall: ${forLog((e as Error)?.stack ?? e, 2000)}\n`);
    process.exit(1);
  },
);
