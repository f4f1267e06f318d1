#!/usr/bin/env node
// qubes-net-lab: a Qubes-like network on one machine (see --help). `up` leaves a supervisor
// process that owns the lab; every other command talks to it over the lab's control socket,
// except `exec`, which enters the qube's namespaces directly from the state file.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { packageVersion, requireRootOrExit } from '@qubes-net/common';
import { cleanupStale } from '@qubes-net/netns';
import { DEFAULT_TOPOLOGY_FILE, loadTopologyFile } from './topology/load.js';
import { TopologyError } from './topology/validate.js';
import { DEFAULT_STATE_ROOT, type ProgressEvent } from './runtime/lab.js';
import { CONTROL_SOCKET, runSupervisor } from './runtime/supervisor.js';
import { callControl, LabNotRunning } from './runtime/control.js';
import { formatStatus, type LabStatus } from './status.js';
import type { CheckResult } from './checks.js';
import type { FaultResult } from './ops/faults.js';

const HELP = `Usage: qubes-net-lab [--lab NAME] <command> [args]

A Qubes-like network on this machine: each qube is a network + mount namespace with its own
QubesDB daemon, the real agents run inside, dom0's role writes QubesDB like dom0 does, and a
fake internet (documentation addresses only) sits behind sys-net. Needs root.

Commands:
  up [FILE] [--keep]        build the lab from a topology (default: the shipped default.yaml)
                            and leave it running; --keep keeps what was built if up fails
  down                      remove everything the lab created (namespaces, links, processes)
  status [--json] [--no-probe]
                            per qube: IPs, gateway, DNS ok, uplink, vif, firewall, agents, logs
  checks                    run the connectivity checks against the running lab
  exec QUBE -- CMD [ARG…]   run a command inside a qube
  start|stop|kill|restart QUBE
  netvm QUBE NETVM|none     change a qube's netvm at runtime
  feature QUBE NAME VALUE   set a feature (e.g. ipv6 1, ipv6 ""); propagates down the tree
  feature QUBE NAME --unset
  firewall QUBE RULE…       set rules, one argument per rule, qvm-firewall syntax:
                            'action=accept dsthost=www.example.test proto=tcp dstports=80'
  firewall QUBE --reset     back to the default (accept everything)
  dns SERVER…               change sys-net's upstream DNS servers
  agent QUBE AGENT kill|restart
                            fault injection: AGENT is qubesdb (the QubesDB daemon; comes back
                            empty and dom0 writes its keys again), uplink (alias guest: the
                            uplink watcher, restarted as Restart= would, re-applies), agent
                            (aliases driver, firewall: the one network agent process; after a
                            kill its socket activation starts it on the next request), watch
                            (the agent's activating watcher; restarted with its cgroup stopped)
  qubesdb-restart QUBE      the QubesDB daemon restarts empty, dom0's keys are written again
  demo [FILE] [--keep]      up, run the checks, print the status table, then down (unless --keep)
  validate [FILE]           check a topology file and exit

  --template debian-13 up|demo|status|exec|firewall|netvm|dns|down
                            the same topology, each qube a booted Debian 13 template (systemd,
                            our .deb installed with apt) in a systemd-nspawn container; the
                            template is built once and cached under /var/cache/qubes-net-lab

Options:
  --version                 print the version
  --lab NAME                which lab (default: the only one running, or the topology's name)
  --template NAME           boot the qubes from a template (debian-13); see above

Environment:
  QUBES_NET_LAB_STATE_ROOT  where labs keep state.json, logs, the control socket
                            (default ${DEFAULT_STATE_ROOT})
  QUBES_NET_AGENT_ROOT      a directory laid out like packages/ to take the agents from
  QUBES_NET_AGENT_BINDIR    a directory with the installed commands (qubes-net-guest, …)
  QUBES_NET_VIF_SCRIPT      the hotplug script (default: driver-agent/scripts/vif-route-qubes)

Exit status: 0 ok, 1 failed, 2 usage or topology error, 3 no such lab running, 77 not root.
`;

const CLI_PATH = fileURLToPath(import.meta.url);
const stateRoot = () => process.env.QUBES_NET_LAB_STATE_ROOT ?? DEFAULT_STATE_ROOT;

class UsageError extends Error {}

interface Parsed {
  lab?: string;
  /** --template NAME: the qubes boot that template (src/template/). */
  template?: string;
  command: string;
  args: string[];
  flags: Set<string>;
  /** Arguments after `--` (exec). */
  rest: string[];
}

const KNOWN_FLAGS = new Set(['--keep', '--json', '--no-probe', '--unset', '--reset', '--help', '-h', '--version']);

function parse(argv: string[]): Parsed {
  const args: string[] = [];
  const flags = new Set<string>();
  let lab: string | undefined;
  let template: string | undefined;
  let rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (a === '--lab') {
      lab = argv[++i];
      if (!lab) throw new UsageError('--lab needs a name');
    } else if (a === '--template') {
      template = argv[++i];
      if (!template) throw new UsageError('--template needs a name (debian-13)');
    } else if (a.startsWith('--lab=')) lab = a.slice(6);
    else if (a.startsWith('-') && a !== '-') {
      if (!KNOWN_FLAGS.has(a)) throw new UsageError(`unknown option ${a}`);
      flags.add(a);
    } else args.push(a);
  }
  if (lab !== undefined && !/^[a-z][a-z0-9-]{0,11}$/.test(lab)) throw new UsageError(`invalid lab name ${JSON.stringify(lab)}`);
  const command = flags.has('--help') || flags.has('-h') ? 'help' : flags.has('--version') ? 'version' : args.shift() ?? 'help';
  return { ...(lab ? { lab } : {}), ...(template ? { template } : {}), command, args, flags, rest };
}

function need(p: Parsed, n: number, what: string): string[] {
  if (p.args.length !== n) throw new UsageError(`${p.command} takes ${what}`);
  return p.args;
}

// ------------------------------------------------------------------ lab discovery

function labDirs(): string[] {
  if (!existsSync(stateRoot())) return [];
  return readdirSync(stateRoot()).filter((d) => /^[a-z][a-z0-9-]{0,11}$/.test(d) && existsSync(join(stateRoot(), d, 'state.json'))).sort();
}

function pickLab(p: Parsed): string {
  if (p.lab) return p.lab;
  const labs = labDirs();
  if (labs.length === 1) return labs[0]!;
  if (labs.length === 0) throw new LabNotRunning(stateRoot(), 'no lab is up; start one with `qubes-net-lab up`');
  throw new UsageError(`several labs are up (${labs.join(', ')}): choose one with --lab NAME`);
}

function socketOf(lab: string): string {
  return join(stateRoot(), lab, CONTROL_SOCKET);
}

// ------------------------------------------------------------------ output

function printProgress(e: ProgressEvent): void {
  const t = `${(e.t / 1000).toFixed(1)}s`.padStart(6);
  process.stdout.write(`[${t}] ${(e.qube ?? '').padEnd(14)} ${e.step}${e.detail ? `: ${e.detail}` : ''}\n`);
}

function printChecks(results: CheckResult[]): void {
  let qube = '';
  for (const r of results) {
    if (r.qube !== qube) {
      qube = r.qube;
      process.stdout.write(`  ${qube}\n`);
    }
    const mark = r.ok ? 'ok  ' : 'FAIL';
    const expectation = r.expect === 'blocked' ? ' (must be blocked)' : '';
    process.stdout.write(`    ${mark} ${r.check}${expectation}: ${r.detail}\n`);
  }
  const failed = results.filter((r) => !r.ok).length;
  process.stdout.write(`${results.length - failed}/${results.length} checks as expected${failed ? `, ${failed} FAILED` : ''}\n`);
}

function printFault(r: FaultResult): void {
  const was = r.pid !== undefined ? `pid ${r.pid}` : 'not running';
  const now = r.newPid !== undefined ? `now pid ${r.newPid}` : 'down until its next activation';
  process.stdout.write(`${r.qube} ${r.agent} ${r.action}: ${was}, ${now} (${r.ms} ms)\n  models: ${r.models}\n${r.note ? `  note: ${r.note}\n` : ''}`);
}

// ------------------------------------------------------------------ up / down

/** Starts the supervisor for `file` as lab `name` and relays its progress until ready. */
async function up(file: string, nameOverride: string | undefined, keep: boolean): Promise<string> {
  const model = await loadTopologyFile(file);
  const name = nameOverride ?? model.name;
  const stateDir = join(stateRoot(), name);
  const alive = await callControl(socketOf(name), { op: 'ping' }).then(() => true, () => false);
  if (alive) throw new Error(`lab ${name} is already up; \`qubes-net-lab --lab ${name} down\` first`);
  // Leftovers of a lab whose supervisor died: its namespaces are a stale session by now.
  await cleanupStale().catch(() => []);
  await rm(stateDir, { recursive: true, force: true });
  mkdirSync(stateDir, { recursive: true, mode: 0o750 });
  const logFile = join(stateDir, 'supervisor.log');
  const logFd = openSync(logFile, 'a', 0o640);
  const child = spawn(process.execPath, [CLI_PATH, '--lab', name, 'supervise', file, ...(keep ? ['--keep'] : [])], {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'pipe'],
    cwd: '/',
  });
  closeSync(logFd);
  // Ctrl-C while building: the supervisor tears the half-built lab down.
  const onSigint = () => child.kill('SIGTERM');
  process.on('SIGINT', onSigint);
  process.stdout.write(`building lab ${name} from ${file} (supervisor pid ${child.pid}, log ${logFile})\n`);
  const lines = createInterface({ input: child.stdio[3] as Readable });
  let outcome: { ready?: unknown; error?: string; kept?: boolean } | undefined;
  for await (const line of lines) {
    let msg: { progress?: ProgressEvent; ready?: unknown; error?: string; kept?: boolean };
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    if (msg.progress) printProgress(msg.progress);
    else {
      outcome = msg;
      break;
    }
  }
  process.off('SIGINT', onSigint);
  (child.stdio[3] as Readable).destroy();
  child.unref();
  if (!outcome || outcome.error !== undefined) {
    const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
    throw new Error(`lab ${name} did not come up: ${outcome?.error ?? 'the supervisor exited'}${outcome?.kept ? ` (kept for inspection: \`qubes-net-lab --lab ${name} status\`, then \`down\`)` : ''}${tail ? `\nlast supervisor log lines:\n${tail}` : ''}`);
  }
  return name;
}

async function down(lab: string): Promise<void> {
  try {
    await callControl(socketOf(lab), { op: 'down' }, printProgress);
  } catch (err) {
    if (!(err instanceof LabNotRunning)) throw err;
    // The supervisor is gone: its session is stale now; remove leftovers by exact name.
    const removed = await cleanupStale();
    process.stdout.write(`lab ${lab}: supervisor not running; removed stale sessions: ${removed.join(', ') || 'none'}\n`);
  }
  await rm(join(stateRoot(), lab), { recursive: true, force: true });
  process.stdout.write(`lab ${lab} removed\n`);
}

// ------------------------------------------------------------------ exec

function execInQube(lab: string, qube: string, cmd: string[]): number {
  const stateFile = join(stateRoot(), lab, 'state.json');
  if (!existsSync(stateFile)) throw new LabNotRunning(stateFile, 'no state file');
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { running: Record<string, { commandPrefix: string[] }> };
  const q = state.running[qube];
  if (!q) throw new Error(`qube ${qube} is not running in lab ${lab} (running: ${Object.keys(state.running).join(', ')})`);
  const [bin, ...pre] = q.commandPrefix;
  const r = spawnSync(bin!, [...pre, ...cmd], { stdio: 'inherit' });
  if (r.error) throw r.error;
  return r.status ?? 128 + 9;
}

// ------------------------------------------------------------------ main

async function main(argv: string[]): Promise<number> {
  const p = parse(argv);
  if (p.command === 'version') {
    process.stdout.write(`qubes-net-lab ${packageVersion(import.meta.url)}\n`);
    return 0;
  }
  if (p.command === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (p.command === 'validate') {
    const file = p.args[0] ?? DEFAULT_TOPOLOGY_FILE;
    const m = await loadTopologyFile(file);
    process.stdout.write(`${file}: ok (lab ${m.name}, ${m.qubes.size} qubes)\n`);
    return 0;
  }
  requireRootOrExit('qubes-net-lab');
  if (p.template) {
    const { templateMain } = await import('./template/cli.js');
    const topologyFile = ['up', 'demo', 'supervise-template'].includes(p.command) ? p.args[0] ?? DEFAULT_TOPOLOGY_FILE : DEFAULT_TOPOLOGY_FILE;
    return templateMain({ template: p.template, command: p.command, args: p.args, flags: p.flags, rest: p.rest, ...(p.lab ? { lab: p.lab } : {}), cliPath: CLI_PATH, topologyFile });
  }
  const call = (op: string, args?: Record<string, unknown>) => callControl(socketOf(pickLab(p)), { op, ...(args ? { args } : {}) }, printProgress);
  switch (p.command) {
    case 'supervise': {
      const model = await loadTopologyFile(p.args[0] ?? DEFAULT_TOPOLOGY_FILE);
      if (p.lab) model.name = p.lab;
      return runSupervisor({ model, stateDir: join(stateRoot(), model.name), reportFd: 3, keepOnFailure: p.flags.has('--keep') });
    }
    case 'up': {
      if (p.args.length > 1) throw new UsageError('up takes at most one topology file');
      const name = await up(p.args[0] ?? DEFAULT_TOPOLOGY_FILE, p.lab, p.flags.has('--keep'));
      process.stdout.write(`lab ${name} is up. Try: qubes-net-lab --lab ${name} status | exec work -- qn-http-get http://www.example.test/ | down\n`);
      return 0;
    }
    case 'down':
      need(p, 0, 'no arguments');
      await down(pickLab(p));
      return 0;
    case 'status': {
      need(p, 0, 'no arguments');
      const st = (await call('status', { probe: !p.flags.has('--no-probe') })) as LabStatus;
      process.stdout.write(p.flags.has('--json') ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st));
      return st.qubes.some((q) => q.agents.some((a) => !a.running)) ? 1 : 0;
    }
    case 'checks': {
      const results = (await call('checks')) as CheckResult[];
      if (p.flags.has('--json')) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
      else printChecks(results);
      return results.every((r) => r.ok) ? 0 : 1;
    }
    case 'exec': {
      const [qube] = need(p, 1, 'QUBE -- CMD [ARG…]');
      if (p.rest.length === 0) throw new UsageError('exec QUBE -- CMD [ARG…]');
      return execInQube(pickLab(p), qube!, p.rest);
    }
    case 'start': case 'stop': case 'kill': case 'restart': {
      const [qube] = need(p, 1, 'QUBE');
      await call(p.command, { qube });
      process.stdout.write(`${qube}: ${p.command} done\n`);
      return 0;
    }
    case 'netvm': {
      const [qube, netvm] = need(p, 2, 'QUBE NETVM|none');
      await call('netvm', { qube, netvm: netvm === 'none' || netvm === '' ? null : netvm });
      process.stdout.write(`${qube}: netvm is now ${netvm}\n`);
      return 0;
    }
    case 'feature': {
      const unset = p.flags.has('--unset');
      const [qube, feature, value] = unset ? need(p, 2, 'QUBE NAME --unset') : need(p, 3, 'QUBE NAME VALUE (or QUBE NAME --unset)');
      await call('feature', { qube, feature, value: unset ? null : value });
      process.stdout.write(`${qube}: feature ${feature} ${unset ? 'unset' : `= ${JSON.stringify(value)}`}\n`);
      return 0;
    }
    case 'firewall': {
      const [qube, ...rules] = p.args;
      if (!qube) throw new UsageError('firewall QUBE RULE… | QUBE --reset');
      if (rules.length === 0 && !p.flags.has('--reset')) throw new UsageError('give rules (one argument each) or --reset');
      const applied = await call('firewall', { qube, rules: p.flags.has('--reset') ? [] : rules });
      if (Object.keys(applied as object).length === 0) process.stdout.write(`${qube}: rules saved; they apply when ${qube} is connected\n`);
      for (const [ip, v] of Object.entries(applied as Record<string, { generation: string; state: string; detail: string }>)) process.stdout.write(`${qube} ${ip}: ${v.state} ${v.detail} (generation ${v.generation})\n`);
      return 0;
    }
    case 'dns': {
      if (p.args.length === 0) throw new UsageError('dns SERVER…');
      const r = (await call('dns', { servers: p.args })) as { upstream?: string };
      process.stdout.write(`upstream DNS now ${r.upstream ?? p.args.join(' ')}\n`);
      return 0;
    }
    case 'agent': {
      const [qube, agent, action] = need(p, 3, 'QUBE AGENT kill|restart');
      const r = (await call('agent', { qube, agent, action })) as FaultResult;
      printFault(r);
      return 0;
    }
    case 'qubesdb-restart': {
      const [qube] = need(p, 1, 'QUBE');
      printFault((await call('qubesdb-restart', { qube })) as FaultResult);
      return 0;
    }
    case 'demo':
      return demo(p);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(p.command)}`);
  }
}

/** `npm start`: build the default lab, check it, show it, remove it (unless --keep). */
async function demo(p: Parsed): Promise<number> {
  const keep = p.flags.has('--keep');
  const lab = p.lab ?? 'demo';
  const t0 = Date.now();
  process.stdout.write('== Building the network (each qube: namespaces, QubesDB, dom0 entries, vif + hotplug, agents)\n');
  let name: string;
  try {
    name = await up(p.args[0] ?? DEFAULT_TOPOLOGY_FILE, lab, keep);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
  const sock = socketOf(name);
  let ok = false;
  try {
    process.stdout.write(`== Network up in ${((Date.now() - t0) / 1000).toFixed(1)} s. Connectivity checks (from inside each qube):\n`);
    const results = (await callControl(sock, { op: 'checks' })) as CheckResult[];
    printChecks(results);
    process.stdout.write('== Status\n');
    const st = (await callControl(sock, { op: 'status', args: { probe: true } })) as LabStatus;
    process.stdout.write(formatStatus(st));
    ok = results.every((r) => r.ok);
  } catch (err) {
    process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  } finally {
    if (keep) {
      process.stdout.write(`== Kept: qubes-net-lab --lab ${name} status | exec QUBE -- CMD | netvm | feature | firewall | dns | down\n`);
    } else {
      process.stdout.write('== Tearing down\n');
      await down(name).catch((err) => process.stderr.write(`teardown failed: ${(err as Error).message}\n`));
    }
  }
  return ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof UsageError) {
      process.stderr.write(`qubes-net-lab: ${err.message}\n(see qubes-net-lab --help)\n`);
      process.exit(2);
    }
    if (err instanceof TopologyError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof LabNotRunning) {
      process.stderr.write(`qubes-net-lab: ${err.message}\n`);
      process.exit(3);
    }
    process.stderr.write(`qubes-net-lab: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
