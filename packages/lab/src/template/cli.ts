// `qubes-net-lab --template debian-13 up|demo|status|exec|firewall|netvm|dns|down`: the topology's qubes
// as booted templates. `up` leaves a supervisor process holding the lab (containers are its
// children); `exec` and `status` enter the containers from the state file; `firewall` and
// `down` signal the supervisor through a request file it watches.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isIP } from 'node:net';
import { loadTopologyFile } from '../topology/load.js';
import { chainVerdict, uplinkOf, type Probe } from '../expectations.js';
import { buildDeb } from './deb.js';
import { pidAlive } from '../runtime/processes.js';
import { TemplateLab, TEMPLATE_NAMES, type TemplateName } from './lab.js';

export const TEMPLATE_STATE_ROOT = '/run/qubes-net-lab/templates';

export interface TemplateCliArgs {
  template: string;
  command: string;
  args: string[];
  flags: Set<string>;
  rest: string[];
  lab?: string;
  /** This CLI's own path (to start the supervisor). */
  cliPath: string;
  topologyFile: string;
}

const log = (msg: string, fields?: Record<string, unknown>): void => {
  process.stdout.write(`[${new Date().toISOString().slice(11, 23)}] ${msg}${fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : ''}\n`);
};

function checkTemplate(name: string): TemplateName {
  if (!(TEMPLATE_NAMES as readonly string[]).includes(name)) throw new Error(`unknown template ${JSON.stringify(name)} (known: ${TEMPLATE_NAMES.join(', ')})`);
  return name as TemplateName;
}

interface StateFile {
  supervisorPid: number;
  lab: string;
  status: { qubes: Array<{ name: string; leaderPid?: number }> } & Record<string, unknown>;
}

function stateDir(lab: string): string {
  return join(TEMPLATE_STATE_ROOT, lab);
}

function readState(lab: string): StateFile {
  const f = join(stateDir(lab), 'supervisor.json');
  if (!existsSync(f)) throw new Error(`no template lab ${lab} is up (${f} missing)`);
  return JSON.parse(readFileSync(f, 'utf8')) as StateFile;
}

export interface CheckLine {
  qube: string;
  check: string;
  expect: 'pass' | 'blocked';
  ok: boolean;
  detail: string;
}

/** DNS, HTTP and ICMP from each running client, each against what the model's firewalls say. */
export async function templateChecks(lab: TemplateLab): Promise<CheckLine[]> {
  const hosts = lab.internet.net.hostEntries();
  const resolve = (h: string): readonly string[] => hosts.find((e) => e.name === h)?.addresses ?? [];
  const web4 = resolve('www.example.test').find((a) => isIP(a) === 4) ?? '203.0.113.80';
  const gw4 = lab.internet.addresses.gateway4;
  const out: CheckLine[] = [];
  for (const q of lab.qubes.values()) {
    if (q.spec.netvm === null || !uplinkOf(lab.model, q.name)) continue;
    const want = (p: Probe): boolean => chainVerdict(lab.model, q.name, p, resolve).verdict === 'accept';
    const dnsR = await lab.exec(q.name, ['getent', 'ahostsv4', 'www.example.test'], { timeoutMs: 15_000 });
    const dnsOk = dnsR.stdout.includes(web4);
    const dnsWant = want({ proto: 'udp', dst: '10.139.1.1', port: 53, dns: true });
    out.push({ qube: q.name, check: 'DNS www.example.test', expect: dnsWant ? 'pass' : 'blocked', ok: dnsOk === dnsWant, detail: dnsOk ? web4 : 'no answer' });
    const script = `fetch('http://${web4}/', { signal: AbortSignal.timeout(4000) }).then((r) => console.log(r.status), (e) => console.log('error', e.cause?.code ?? e.name))`;
    const http = (await lab.exec(q.name, ['node', '-e', script], { timeoutMs: 15_000 })).stdout.trim();
    const httpWant = want({ proto: 'tcp', dst: web4, port: 80 });
    out.push({ qube: q.name, check: `HTTP ${web4}`, expect: httpWant ? 'pass' : 'blocked', ok: (http === '200') === httpWant, detail: http });
    const pingOk = (await lab.exec(q.name, ['ping', '-n', '-c', '1', '-W', '2', gw4])).exitCode === 0;
    const pingWant = want({ proto: 'icmp', dst: gw4, icmpType: 8 });
    out.push({ qube: q.name, check: `ping ${gw4}`, expect: pingWant ? 'pass' : 'blocked', ok: pingOk === pingWant, detail: pingOk ? 'reply' : 'no reply' });
  }
  return out;
}

function printChecks(results: CheckLine[]): void {
  for (const r of results) process.stdout.write(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.qube.padEnd(14)} ${r.check}${r.expect === 'blocked' ? ' (must be blocked)' : ''}: ${r.detail}\n`);
  const failed = results.filter((r) => !r.ok).length;
  process.stdout.write(`${results.length - failed}/${results.length} checks as expected${failed ? `, ${failed} FAILED` : ''}\n`);
}

async function failedUnits(lab: TemplateLab): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const q of lab.qubes.values()) out[q.name] = await q.container.failedUnits();
  return out;
}

async function createLab(a: TemplateCliArgs, labName: string): Promise<TemplateLab> {
  const model = await loadTopologyFile(a.topologyFile);
  model.name = labName;
  log('building our .deb (packaging/build.mjs)');
  const deb = await buildDeb();
  log('template image (cached under /var/cache/qubes-net-lab)', { deb });
  return TemplateLab.create(model, { deb, log, stateDir: stateDir(labName) });
}

/** The supervisor: brings the lab up, then serves requests from files until asked to go down. */
async function supervise(a: TemplateCliArgs, labName: string): Promise<number> {
  const dir = stateDir(labName);
  mkdirSync(dir, { recursive: true });
  const lab = await createLab(a, labName);
  let stopping = false;
  const stop = (): void => { stopping = true; };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  try {
    await lab.up();
    const save = async (): Promise<void> => writeFileSync(join(dir, 'supervisor.json'), JSON.stringify({ supervisorPid: process.pid, lab: labName, status: await lab.status() }, null, 2) + '\n');
    await save();
    log('lab up', { lab: labName });
    const reqFile = join(dir, 'request.json');
    while (!stopping) {
      if (existsSync(reqFile)) {
        const req = JSON.parse(readFileSync(reqFile, 'utf8')) as { op: string; qube?: string; rules?: string[]; netvm?: string };
        rmSync(reqFile, { force: true });
        let reply: unknown;
        try {
          if (req.op === 'firewall' && req.qube) await lab.setFirewall(req.qube, req.rules?.length ? req.rules : ['action=accept']);
          else if (req.op === 'netvm' && req.qube && req.netvm) await lab.setNetvm(req.qube, req.netvm);
          else if (req.op === 'dns' && req.rules?.length) await lab.setUpstreamDns(req.rules);
          else throw new Error(`unknown request ${JSON.stringify(req.op)}`);
          reply = { ok: true };
        } catch (err) {
          reply = { ok: false, error: String((err as Error).message ?? err) };
        }
        writeFileSync(join(dir, 'reply.json'), JSON.stringify(reply) + '\n');
        await save();
      }
      await sleep(200);
    }
  } finally {
    log('tearing down', { lab: labName });
    await lab.down();
    rmSync(dir, { recursive: true, force: true });
  }
  return 0;
}

async function request(labName: string, req: Record<string, unknown>): Promise<{ ok: boolean; error?: string }> {
  const dir = stateDir(labName);
  readState(labName);
  rmSync(join(dir, 'reply.json'), { force: true });
  writeFileSync(join(dir, 'request.json'), JSON.stringify(req) + '\n');
  for (let i = 0; i < 600; i++) {
    if (existsSync(join(dir, 'reply.json'))) return JSON.parse(readFileSync(join(dir, 'reply.json'), 'utf8')) as { ok: boolean; error?: string };
    await sleep(200);
  }
  throw new Error(`lab ${labName}: no reply from the supervisor`);
}


/** Runs the template lab command; returns the exit status. */
export async function templateMain(a: TemplateCliArgs): Promise<number> {
  checkTemplate(a.template);
  const labName = a.lab ?? 'tpl';
  switch (a.command) {
    case 'supervise-template':
      return supervise(a, labName);
    case 'demo': {
      const lab = await createLab(a, labName);
      let ok = false;
      try {
        process.stdout.write('== Booting each qube from the Debian 13 template (systemd, our .deb installed)\n');
        await lab.up();
        process.stdout.write('== Connectivity checks (from inside each booted client)\n');
        const results = await templateChecks(lab);
        printChecks(results);
        const failed = await failedUnits(lab);
        for (const [q, units] of Object.entries(failed)) process.stdout.write(`  ${units.length ? 'FAIL' : 'ok  '} ${q.padEnd(14)} systemctl --failed: ${units.join(' ') || 'none'}\n`);
        process.stdout.write('== Status (boot-to-network, unit memory)\n');
        process.stdout.write(JSON.stringify(await lab.status(), null, 2) + '\n');
        ok = results.every((r) => r.ok) && Object.values(failed).every((u) => u.length === 0);
      } catch (err) {
        process.stderr.write(`demo failed: ${(err as Error).message}\n`);
      } finally {
        process.stdout.write('== Tearing down\n');
        await lab.down();
      }
      return ok ? 0 : 1;
    }
    case 'up': {
      if (existsSync(join(stateDir(labName), 'supervisor.json')) && pidAlive(readState(labName).supervisorPid)) throw new Error(`template lab ${labName} is already up`);
      mkdirSync(stateDir(labName), { recursive: true });
      const logFile = join(stateDir(labName), 'supervisor.log');
      const fd = openSync(logFile, 'a', 0o640);
      const child = spawn(process.execPath, [a.cliPath, '--lab', labName, '--template', a.template, 'supervise-template', a.topologyFile], { detached: true, stdio: ['ignore', fd, fd], cwd: '/' });
      closeSync(fd);
      child.unref();
      process.stdout.write(`booting template lab ${labName} (supervisor pid ${child.pid}, log ${logFile})\n`);
      for (;;) {
        if (existsSync(join(stateDir(labName), 'supervisor.json'))) break;
        if (child.exitCode !== null || !pidAlive(child.pid!)) {
          process.stderr.write(readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n'));
          return 1;
        }
        await sleep(250);
      }
      process.stdout.write(`template lab ${labName} is up. Try: qubes-net-lab --template ${a.template} --lab ${labName} exec work -- systemctl status | status | down\n`);
      return 0;
    }
    case 'status': {
      const st = readState(labName);
      process.stdout.write(JSON.stringify(st.status, null, 2) + '\n');
      return 0;
    }
    case 'exec': {
      const qube = a.args[0];
      if (!qube || a.rest.length === 0) throw new Error('exec QUBE -- CMD [ARG…]');
      const q = readState(labName).status.qubes.find((x) => x.name === qube);
      if (!q?.leaderPid) throw new Error(`qube ${qube} is not running in template lab ${labName}`);
      const r = spawnSync('nsenter', ['-t', String(q.leaderPid), '-m', '-u', '-i', '-n', '-p', '-C', '-r', '-w', '--', 'env', '-i',
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8', 'HOME=/root', `TERM=${process.env.TERM ?? 'dumb'}`, ...a.rest], { stdio: 'inherit' });
      return r.status ?? 1;
    }
    case 'firewall': {
      const [qube, ...rules] = a.args;
      if (!qube) throw new Error('firewall QUBE RULE… | QUBE --reset');
      const r = await request(labName, { op: 'firewall', qube, rules: a.flags.has('--reset') ? [] : rules });
      if (!r.ok) throw new Error(r.error ?? 'failed');
      process.stdout.write(`${qube}: rules applied\n`);
      return 0;
    }
    case 'netvm': {
      const [qube, netvm] = a.args;
      if (!qube || !netvm || a.args.length !== 2) throw new Error('netvm QUBE NETVM');
      const r = await request(labName, { op: 'netvm', qube, netvm });
      if (!r.ok) throw new Error(r.error ?? 'failed');
      process.stdout.write(`${qube}: netvm is now ${netvm}\n`);
      return 0;
    }
    case 'dns': {
      if (a.args.length === 0) throw new Error('dns SERVER…');
      const r = await request(labName, { op: 'dns', rules: a.args });
      if (!r.ok) throw new Error(r.error ?? 'failed');
      process.stdout.write(`sys-net's upstream DNS now ${a.args.join(' ')}\n`);
      return 0;
    }
    case 'down': {
      let st: StateFile;
      try {
        st = readState(labName);
      } catch {
        process.stdout.write(`template lab ${labName} is not up\n`);
        return 0;
      }
      if (pidAlive(st.supervisorPid)) process.kill(st.supervisorPid, 'SIGTERM');
      while (pidAlive(st.supervisorPid)) await sleep(200);
      rmSync(stateDir(labName), { recursive: true, force: true });
      process.stdout.write(`template lab ${labName} removed\n`);
      return 0;
    }
    default:
      throw new Error(`${a.command} is not available with --template (up, demo, status, exec, firewall, netvm, dns, down)`);
  }
}
