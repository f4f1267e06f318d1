#!/usr/bin/env node
// qubes-net-agent: see USAGE in options.ts. Exit codes: the shared table (EXIT).
import { EXIT } from '@qubes-net/common/exit-codes';
import { parseOptions, USAGE, type AgentOptions } from './options.js';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--version') {
    const { packageVersion } = await import('@qubes-net/common/version');
    process.stdout.write(`qubes-net-agent ${packageVersion(import.meta.url)}\n`);
    return EXIT.ok;
  }
  if (argv.length === 0 || argv.includes('-h') || argv.includes('--help') || argv[0] === 'help') {
    process.stdout.write(USAGE);
    return argv.length ? EXIT.ok : EXIT.usage;
  }
  let opts: AgentOptions;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  // Each command loads only what its path needs: the hotplug fallback and status stay small.
  switch (opts.command) {
    case 'run': {
      const { requireRootOrExit } = await import('@qubes-net/common/root');
      requireRootOrExit('qubes-net-agent run');
      const { runAgent } = await import('./agent.js');
      return runAgent(opts);
    }
    case 'hotplug': {
      const { hotplugFallback } = await import('./hotplug.js');
      return hotplugFallback(opts);
    }
    case 'status': {
      const { controlRequest, NoAgentError, exitCodeOf } = await import('@qubes-net/common/control');
      try {
        const r = await controlRequest(opts.socket, { op: 'status' }, { timeoutMs: 30_000 });
        process.stdout.write(opts.json ? JSON.stringify(r) + '\n' : `${r.ok ? 'ok' : r.code}: ${r.message}\n${JSON.stringify(r.details, null, 2)}\n`);
        return exitCodeOf(r);
      } catch (err) {
        if (!(err instanceof NoAgentError)) throw err;
        process.stdout.write(opts.json ? JSON.stringify({ ok: false, code: 'stopping', message: err.message, details: {} }) + '\n' : `${err.message}\n`);
        return EXIT.noReply;
      }
    }
    case 'render-firewall': {
      const ip = opts.positionals[0];
      if (!ip || opts.positionals.length > 1) {
        process.stderr.write('usage: qubes-net-agent render-firewall IP [--qubesdb-run-dir DIR] [--resolv-conf PATH]\n');
        return EXIT.usage;
      }
      const { renderQube, readResolvConf, resolveHost } = await import('@qubes-net/firewall');
      const { openQubesDB } = await import('@qubes-net/qubesdb/client');
      const db = openQubesDB(opts.qubesdbDir ? { runDir: opts.qubesdbDir } : {});
      try {
        const servers = (await readResolvConf(opts.resolvConf)).servers;
        const out = await renderQube({ ip, servers, db, resolve: (h, f, s) => resolveHost(h, f, s, { timeoutMs: 2_000, tries: 2 }) });
        if (!out.ok) {
          process.stderr.write(`${out.error}\n`);
          return EXIT.invalidConfig;
        }
        process.stdout.write(out.text);
        return EXIT.ok;
      } finally {
        await db.close();
      }
    }
    case 'watch-args': {
      const { agentWatchArgs } = await import('./watch-args.js');
      const out = agentWatchArgs({
        cli: /\.(c|m)?js$/.test(opts.cli) ? [process.execPath, opts.cli] : [opts.cli],
        socket: opts.socket,
        wakeFile: opts.wakeFile,
        resolvConf: opts.resolvConf,
        uplinks: opts.uplinks,
        ...(opts.qubesdbDir !== undefined ? { qubesdbDir: opts.qubesdbDir } : {}),
        runArgs: [...(opts.idleExitGiven ? ['--idle-exit', String(opts.idleExitMs)] : []), ...(opts.resolvConf !== '/etc/resolv.conf' ? ['--resolv-conf', opts.resolvConf] : [])],
      });
      process.stdout.write(opts.json ? JSON.stringify(out) + '\n' : out.join('\n') + '\n');
      return EXIT.ok;
    }
    default:
      process.stderr.write(`unknown command ${JSON.stringify(opts.command.slice(0, 40))}\n${USAGE}`);
      return EXIT.usage;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`qubes-net-agent: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(EXIT.failure);
  },
);
