#!/usr/bin/env node
// qubes-net-qdb: the QubesDB command-line tool, behaving like upstream's qubesdb-read,
// -write, -rm, -list, -multiread and -watch (same flags, output and exit codes), plus
// `qubes-net-qdb daemon …`, which runs our QubesDB daemon.
//
//   qubes-net-qdb read [-frqwx] [-e|--default V] [-d DOM] [--run-dir DIR] PATH…
//   qubes-net-qdb write PATH VALUE [PATH VALUE…]     qubes-net-qdb rm PATH…
//   qubes-net-qdb list [-f] PATH                     qubes-net-qdb multiread [-fr] PATH…
//   qubes-net-qdb watch [-n N] PATH…                 qubes-net-qdb daemon [daemon options]
//
// Exit codes: 0 success; read: 2 when a key was missing and nothing else failed; 1 on any
// other failure (including usage errors). Invoked through a symlink named qubesdb-CMD (like
// upstream's), CMD comes from the name.
import { readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QubesDBError } from './api.js';
import { openSocketQubesDB, type SocketQubesDB } from './socket-client.js';

/** What the client commands use: the pure-JS socket client (no koffi on this one-shot path). */
type CliDb = Pick<SocketQubesDB, 'readBytes' | 'write' | 'rm' | 'list' | 'multireadBytes' | 'watch' | 'close'>;

const COMMANDS = ['read', 'write', 'rm', 'list', 'multiread', 'watch'] as const;
type Command = (typeof COMMANDS)[number];

export const USAGE = `usage: qubes-net-qdb COMMAND [options] [arguments]
commands:
  read PATH...                 print values (exit 2 if a key is missing)
  write PATH VALUE [PATH VALUE...]
  rm PATH...                   a PATH ending in '/' removes everything under it
  list PATH                    paths starting with PATH, relative to it
  multiread PATH...            "relpath = value" for every entry starting with PATH
  watch [-n N] PATH...         print changed paths (N events, default 1, negative: forever)
  daemon [options]             run the QubesDB daemon (see: qubes-net-qdb daemon --help)
options:
  -f              print full paths
  -r              raw values (otherwise bytes < 0x20 and >= 0x80 print as \\xNN)
  -q              quiet: no error messages
  -w              read: wait until the key exists
  -x              read: remove the key after reading it
  -e, --default V read (one PATH): print V when the key is missing
  -n N            watch: number of events before exiting
  -d DOMAIN       use DOMAIN's database (qubesdb.DOMAIN.sock)
  --run-dir DIR   sockets are in DIR instead of /var/run/qubes
  -h, --help      this help
  --version       print the version
`;

export interface CliOptions {
  command: Command;
  fullPath: boolean;
  raw: boolean;
  quiet: boolean;
  wait: boolean;
  remove: boolean;
  defaultValue?: string;
  count: number;
  domain?: string;
  runDir?: string;
  args: string[];
}

export type Parsed = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; opts: CliOptions };

export class UsageError extends Error {}

/**
 * Parses everything after the command word, getopt-style: short flags may be grouped (-fr),
 * option values attached (-n5) or separate (-n 5), options may follow arguments, `--` ends
 * options.
 */
export function parseCliArgs(command: string, argv: readonly string[]): Parsed {
  if (!(COMMANDS as readonly string[]).includes(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const opts: CliOptions = { command: command as Command, fullPath: false, raw: false, quiet: false, wait: false, remove: false, count: 1, args: [] };
  let countGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = (what: string): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${what} needs a value`);
      return v;
    };
    if (arg === '--') {
      opts.args.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg : arg.slice(0, eq);
      const value = (): string => (eq < 0 ? next(name) : arg.slice(eq + 1));
      switch (name) {
        case '--help':
          return { kind: 'help' };
        case '--version':
          return { kind: 'version' };
        case '--default':
          opts.defaultValue = value();
          break;
        case '--run-dir':
          opts.runDir = value();
          if (!opts.runDir) throw new UsageError('--run-dir must not be empty');
          break;
        default:
          throw new UsageError(`unknown option ${name}`);
      }
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      opts.args.push(arg);
      continue;
    }
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j]!;
      const rest = arg.slice(j + 1);
      const takeValue = (): string => {
        j = arg.length;
        return rest !== '' ? rest : next(`-${flag}`);
      };
      switch (flag) {
        case 'f': opts.fullPath = true; break;
        case 'r': opts.raw = true; break;
        case 'q': opts.quiet = true; break;
        case 'w': opts.wait = true; break;
        case 'x': opts.remove = true; break;
        case 'h': return { kind: 'help' };
        case 'e': opts.defaultValue = takeValue(); break;
        case 'd': opts.domain = takeValue(); break;
        case 'n': {
          const v = takeValue();
          if (!/^-?\d+$/.test(v)) throw new UsageError(`-n needs a whole number, got ${JSON.stringify(v)}`);
          opts.count = Number(v);
          countGiven = true;
          break;
        }
        default:
          throw new UsageError(`unknown option -${flag}`);
      }
    }
  }
  if (countGiven && opts.command !== 'watch') throw new UsageError('-n is valid only for watch');
  if (opts.defaultValue !== undefined && (opts.command !== 'read' || opts.args.length !== 1)) {
    throw new UsageError('-e/--default needs the read command and exactly one path');
  }
  if ((opts.wait || opts.remove) && opts.command !== 'read') throw new UsageError('-w and -x are valid only for read');
  if (opts.command === 'list' && opts.args.length !== 1) throw new UsageError('list takes exactly one path');
  if (opts.command === 'write' && opts.args.length % 2 !== 0) throw new UsageError('write takes PATH VALUE pairs');
  return { kind: 'run', opts };
}

/** Without -r, bytes below 0x20 and from 0x80 up print as \xNN (lower-case hex), like upstream. */
export function encodeValue(value: Buffer, raw: boolean): Buffer {
  if (raw) return value;
  const out: number[] = [];
  for (const b of value) {
    if (b >= 0x20 && b < 0x80) out.push(b);
    else for (const c of Buffer.from(`\\x${b.toString(16).padStart(2, '0')}`, 'latin1')) out.push(c);
  }
  return Buffer.from(out);
}

interface Io {
  out(data: string | Buffer): void;
  err(msg: string): void;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Reads path, waiting for it to exist when -w is given. */
async function readOne(db: CliDb, path: string, wait: boolean): Promise<Buffer | undefined> {
  const value = await db.readBytes(path);
  if (value !== undefined || !wait) return value;
  const watch = db.watch([path]);
  try {
    // Re-read after registering (it may have appeared meanwhile) and after every event.
    let v = await db.readBytes(path);
    if (v !== undefined) return v;
    for await (const _ of watch) {
      v = await db.readBytes(path);
      if (v !== undefined) return v;
    }
    return undefined;
  } finally {
    await watch.close();
  }
}

async function runCommand(db: CliDb, o: CliOptions, io: Io): Promise<number> {
  const complain = (msg: string): void => {
    if (!o.quiet) io.err(msg);
  };
  switch (o.command) {
    case 'read': {
      let missing = false;
      let failed = false;
      for (const path of o.args) {
        let value: Buffer | undefined;
        try {
          value = await readOne(db, path, o.wait);
        } catch (err) {
          complain(`Failed to read ${path}: ${describe(err)}`);
          failed = true;
          continue;
        }
        if (value === undefined && o.defaultValue !== undefined) value = Buffer.from(o.defaultValue, 'utf8');
        else if (value === undefined) {
          complain(`Failed to read ${path}: no such key`);
          missing = true;
          continue;
        } else if (o.remove) {
          try {
            await db.rm(path);
          } catch (err) {
            complain(`Failed to remove ${path}: ${describe(err)}`);
            failed = true;
          }
        }
        io.out(Buffer.concat([Buffer.from(o.fullPath ? `${path} = ` : ''), encodeValue(value, o.raw), Buffer.from('\n')]));
      }
      return failed ? 1 : missing ? 2 : 0;
    }
    case 'write': {
      let failed = false;
      for (let i = 0; i < o.args.length; i += 2) {
        try {
          await db.write(o.args[i]!, o.args[i + 1]!);
        } catch (err) {
          complain(`Failed to write ${o.args[i]}: ${describe(err)}`);
          failed = true;
        }
      }
      return failed ? 1 : 0;
    }
    case 'rm': {
      let failed = false;
      for (const path of o.args) {
        try {
          await db.rm(path);
        } catch (err) {
          complain(`Failed to remove ${path}: ${describe(err)}`);
          failed = true;
        }
      }
      return failed ? 1 : 0;
    }
    case 'list': {
      const prefix = o.args[0]!;
      try {
        const paths = await db.list(prefix);
        io.out(paths.map((p) => `${o.fullPath ? p : p.slice(prefix.length)}\n`).join(''));
        return 0;
      } catch (err) {
        complain(`Failed to get entries list: ${describe(err)}`);
        return 1;
      }
    }
    case 'multiread': {
      let failed = false;
      for (const prefix of o.args) {
        try {
          const entries = await db.multireadBytes(prefix);
          const lines: Buffer[] = [];
          for (const [path, value] of entries) {
            lines.push(Buffer.from(`${o.fullPath ? path : path.slice(prefix.length)} = `), encodeValue(value, o.raw), Buffer.from('\n'));
          }
          io.out(Buffer.concat(lines));
        } catch (err) {
          complain(`Failed to read ${prefix}: ${describe(err)}`);
          failed = true;
        }
      }
      return failed ? 1 : 0;
    }
    case 'watch': {
      if (o.args.length === 0) return 0;
      let watch;
      try {
        watch = db.watch(o.args);
      } catch (err) {
        complain(`Failed to setup watch: ${describe(err)}`);
        return 1;
      }
      try {
        let left = o.count;
        if (left === 0) return 0;
        for await (const path of watch) {
          io.out(`${path}\n`);
          if (left > 0 && --left === 0) break;
        }
        return 0;
      } finally {
        await watch.close();
      }
    }
  }
}

function version(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  try {
    return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** The command from a qubesdb-CMD symlink name, if invoked through one. */
function commandFromName(argv1: string | undefined): string | undefined {
  const m = /^qubesdb-([a-z]+)(\.js)?$/.exec(basename(argv1 ?? ''));
  return m && (COMMANDS as readonly string[]).includes(m[1]!) ? m[1] : undefined;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: readonly string[], io: Io, invokedAs?: string): Promise<number> {
  const impliedCommand = commandFromName(invokedAs);
  const command = impliedCommand ?? argv[0];
  const rest = impliedCommand ? argv : argv.slice(1);
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    io.err(USAGE);
    return command === undefined ? 1 : 0;
  }
  if (command === '--version') {
    io.out(`qubes-net-qdb ${version()}\n`);
    return 0;
  }
  if (command === 'daemon') {
    // Loaded only here: the client commands stay light.
    const { runDaemonCli } = await import('./daemon-main.js');
    return runDaemonCli([...rest]);
  }
  let parsed: Parsed;
  try {
    parsed = parseCliArgs(command, rest);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`qubes-net-qdb: ${err.message}\n${USAGE}`);
    return 1;
  }
  if (parsed.kind === 'help') {
    io.err(USAGE);
    return 0;
  }
  if (parsed.kind === 'version') {
    io.out(`qubes-net-qdb ${version()}\n`);
    return 0;
  }
  const o = parsed.opts;
  let db: CliDb;
  try {
    db = await openSocketQubesDB({ ...(o.domain !== undefined ? { name: o.domain } : {}), ...(o.runDir !== undefined ? { runDir: o.runDir } : {}) });
  } catch (err) {
    if (!o.quiet) io.err(`Failed connect to ${o.domain ?? 'local'} daemon: ${err instanceof QubesDBError || err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  try {
    return await runCommand(db, o, io);
  } finally {
    await db.close();
  }
}

function invokedDirectly(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

const isMain = invokedDirectly();
if (isMain) {
  const io: Io = {
    out: (d) => process.stdout.write(d),
    err: (m) => process.stderr.write(m.endsWith('\n') ? m : `${m}\n`),
  };
  main(process.argv.slice(2), io, process.argv[1]).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`qubes-net-qdb: ${describe(err)}\n`);
      process.exitCode = 1;
    },
  );
}
