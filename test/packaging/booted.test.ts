// The per-qube choice at boot, in booted Debian 13 containers (systemd-nspawn, private network,
// systemd 257): stand-ins of the template's Qubes packages (their units enabled as upstream's
// postinst does) and qubes-net installed with dpkg, then each container boots with its own
// QubesDB service flags, a probe unit records what ran, and the container powers off. Checks
// that upstream's unit names run our commands when the qube chose qubes-net (the client's eth0
// configured by `qubes-net-guest apply` under qubes-network-uplink@eth0, with a QubesDB daemon
// in the container), upstream's scripts when it chose upstream, and that nothing fails either
// way; and that a firewall user script's background daemon lands in a scope of its own and
// outlives the agent's restart. (Whole booted networks are the booted-template lab's test,
// test/template.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '@qubes-net/common';
import type * as RootModule from '../../packages/lab/dist/template/root.js';
import type * as ImageModule from '../../packages/lab/dist/template/image.js';
import { isRoot, needRoot } from '../helpers/root.js';
import { buildPackages, ROOT } from './unpacked.js';

interface Probe {
  choice: string;
  failed: string[];
  active: Record<string, string>;
  tables: string[];
  journal: string;
  standins: string[];
  eth0: string;
  forward: string;
  ruleset: string;
  /** The firewall user script's background daemon: PID, cgroup, scope units, after the agent's restart. */
  hook: { pid: string; cgroup: string; units: string; restart: string; after: string; killMode: string };
}

const UNITS = ['qubes-net-choice.service', 'qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network.service', 'qubes-firewall.service',
  'qubes-network-uplink.service', 'qubes-network-uplink@eth0.service', 'qubes-net-uplink-watch@eth0.service', 'qubes-net-agent.socket', 'qubes-net-agent.service', 'qubes-net-agent-watch.service'];

/**
 * An eth0 in the container's own network namespace, before upstream's uplink wait looks for it:
 * one end of a veth pair that stays inside (a container cannot load the dummy module).
 */
const ETH0_UNIT = `[Unit]
Description=qubes-net packaging test: an uplink interface
DefaultDependencies=no
Before=qubes-network-uplink.service network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link add eth0 type veth peer name qn-peer0

[Install]
WantedBy=sysinit.target
`;

const PROBE = `#!/bin/sh
# Records what the boot did, then powers the container off.
d=/root/probe
mkdir -p $d
cat /run/qubes-net/choice >$d/choice 2>/dev/null
systemctl --failed --no-legend --plain >$d/failed 2>&1
for u in ${UNITS.join(' ')}; do echo "$u $(systemctl is-active $u)"; done >$d/active
nft list tables >$d/tables 2>&1
journalctl -b --no-pager -o cat >$d/journal 2>&1
ip -4 -o addr show dev eth0 >$d/eth0 2>&1
cat /proc/sys/net/ipv4/ip_forward >$d/forward 2>&1
nft list ruleset >$d/ruleset 2>&1
cp /var/log/qubes-standins.log $d/standins 2>/dev/null
if [ -x /rw/config/qubes-firewall-user-script ]; then
  # The user script's daemon: in which cgroup, and does it outlive the agent's restart?
  for i in $(seq 100); do [ -s /run/qn-hook-daemon.pid ] && break; sleep 0.1; done
  pid=$(cat /run/qn-hook-daemon.pid 2>/dev/null)
  echo "$pid" >$d/hook-pid
  cat /proc/$pid/cgroup >$d/hook-cgroup 2>&1
  systemctl list-units --all --plain --no-legend 'qubes-net-hook-*' >$d/hook-units 2>&1
  systemctl show -p KillMode qubes-net-agent.service >$d/hook-killmode 2>&1
  systemctl restart qubes-net-agent.service; echo "$?" >$d/hook-restart
  kill -0 "$pid" 2>/dev/null && cat /proc/$pid/cgroup >$d/hook-after 2>&1
fi
systemctl poweroff --no-block
`;

const PROBE_UNIT = `[Unit]
Description=qubes-net packaging test probe
After=multi-user.target qubes-firewall.service qubes-network.service qubes-net-agent.service

[Service]
Type=oneshot
# Let socket activation and the watcher's first request happen first.
ExecStartPre=/bin/sleep 3
ExecStart=/root/probe.sh

[Install]
WantedBy=multi-user.target
`;

/**
 * A QubesDB for the client's uplink: qubes-net's own daemon (upstream's socket and protocol),
 * started before the networking units, holding what dom0 writes for a client qube.
 */
const CLIENT_KEYS = '/qubes-ip 10.137.0.5 /qubes-netmask 255.255.255.255 /qubes-gateway 10.137.0.1 /qubes-primary-dns 10.139.1.1 /qubes-secondary-dns 10.139.1.2 /qubes-service/qubes-net 1';
/** A proxy qube (sys-firewall): its own uplink plus what it serves downstream. */
const PROXY_KEYS = `${CLIENT_KEYS} /qubes-netvm-gateway 10.138.0.1 /qubes-netvm-netmask 255.255.255.255 /qubes-netvm-network 10.138.0.1 /qubes-netvm-primary-dns 10.139.1.1 /qubes-netvm-secondary-dns 10.139.1.2 /qubes-service/qubes-network 1 /qubes-service/qubes-firewall 1`;

const qubesdbUnit = (keys: string): string => `[Unit]
Description=qubes-net packaging test: QubesDB with a client qube's keys
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target qubes-network-uplink.service qubes-net-choice.service

[Service]
Type=simple
ExecStart=/usr/bin/qubes-net-qdb daemon
ExecStartPost=/bin/sh -c 'for i in $(seq 100); do [ -S /var/run/qubes/qubesdb.sock ] && break; sleep 0.1; done; qubes-net-qdb write ${keys}'

[Install]
WantedBy=sysinit.target
`;

let work: string | undefined;
let debs: string[] = [];
let root: typeof RootModule;
let image: typeof ImageModule;

before(async () => {
  if (!isRoot()) return;
  work = mkdtempSync(join(tmpdir(), 'qubes-net-pkg-boot-'));
  const built = await buildPackages(join(work, 'out'), 'deb', true);
  const si = JSON.parse((await run(process.execPath, [join(ROOT, 'packaging/standins/build.mjs'), '--out', join(work, 'si')], { cwd: ROOT })).stdout.trim()) as { debs: Record<string, string> };
  debs = [...Object.values(si.debs), built.deb!];
  root = (await import(join(ROOT, 'packages/lab/dist/template/root.js'))) as typeof RootModule;
  image = (await import(join(ROOT, 'packages/lab/dist/template/image.js'))) as typeof ImageModule;
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A user's firewall script that starts a daemon in the background, as a VPN or dnsmasq setup does. */
const USER_SCRIPT = `#!/bin/sh
sleep 1000 &
echo $! >/run/qn-hook-daemon.pid
`;

/** Boots one container with these QubesDB /qubes-service/* values and returns what the probe saw. */
async function boot(services: Record<string, '0' | '1'>, opts: { eth0?: boolean; qubesdb?: string; userScript?: boolean } = {}): Promise<Probe> {
  const base = await root.ensureDebianRoot();
  const inst = await root.instantiateRoot(base.dir, `pkg-boot-${randomBytes(3).toString('hex')}`);
  const env = { ...image.nspawnEnv(), DEBIAN_FRONTEND: 'noninteractive' };
  const nspawn = ['--register=no', '--keep-unit', '--quiet', '--private-network', '--resolv-conf=off', '-D', inst.dir];
  try {
    // nspawn mounts a tmpfs on /tmp: the .debs go to /var/tmp.
    mkdirSync(join(inst.dir, 'var/tmp/debs'), { recursive: true });
    for (const d of debs) cpSync(d, join(inst.dir, 'var/tmp/debs', basename(d)));
    const names = debs.map((d) => `/var/tmp/debs/${basename(d)}`);
    const ours = names.filter((n) => basename(n).startsWith('qubes-net_'));
    // One dpkg run, ours last (dpkg configures in dependency order anyway).
    const r = await run('systemd-nspawn', [...nspawn, '--', 'sh', '-c', 'dpkg -i "$@" >/dev/null', 'sh', ...names.filter((n) => !ours.includes(n)), ...ours],
      { env, allowFailure: true, timeoutMs: 300_000 });
    if (r.exitCode !== 0) throw new Error(`dpkg -i in the container failed: ${r.stderr.slice(-2000)}`);
    writeFileSync(join(inst.dir, 'root/probe.sh'), PROBE);
    chmodSync(join(inst.dir, 'root/probe.sh'), 0o755);
    writeFileSync(join(inst.dir, 'etc/systemd/system/qn-probe.service'), PROBE_UNIT);
    mkdirSync(join(inst.dir, 'etc/systemd/system/multi-user.target.wants'), { recursive: true });
    symlinkSync('/etc/systemd/system/qn-probe.service', join(inst.dir, 'etc/systemd/system/multi-user.target.wants/qn-probe.service'));
    if (opts.eth0) {
      writeFileSync(join(inst.dir, 'etc/systemd/system/qn-eth0.service'), ETH0_UNIT);
      mkdirSync(join(inst.dir, 'etc/systemd/system/sysinit.target.wants'), { recursive: true });
      symlinkSync('/etc/systemd/system/qn-eth0.service', join(inst.dir, 'etc/systemd/system/sysinit.target.wants/qn-eth0.service'));
    }
    if (opts.qubesdb) {
      writeFileSync(join(inst.dir, 'etc/systemd/system/qn-qubesdb.service'), qubesdbUnit(opts.qubesdb));
      mkdirSync(join(inst.dir, 'etc/systemd/system/sysinit.target.wants'), { recursive: true });
      symlinkSync('/etc/systemd/system/qn-qubesdb.service', join(inst.dir, 'etc/systemd/system/sysinit.target.wants/qn-qubesdb.service'));
      // The guest agent configures Xen interfaces only; here the uplink is a veth (no device driver: "none").
      mkdirSync(join(inst.dir, 'etc/systemd/system.conf.d'), { recursive: true });
      writeFileSync(join(inst.dir, 'etc/systemd/system.conf.d/qn-uplink.conf'), '[Manager]\nDefaultEnvironment=QUBES_NET_UPLINK_DRIVERS=vif,none\n');
    }
    if (opts.userScript) {
      mkdirSync(join(inst.dir, 'rw/config'), { recursive: true });
      writeFileSync(join(inst.dir, 'rw/config/qubes-firewall-user-script'), USER_SCRIPT);
      chmodSync(join(inst.dir, 'rw/config/qubes-firewall-user-script'), 0o755);
    }
    const db = join(inst.dir, 'var/lib/qubesdb-standin/qubes-service');
    mkdirSync(db, { recursive: true });
    for (const [name, value] of Object.entries(services)) writeFileSync(join(db, name), value);
    const b = await run('systemd-nspawn', [...nspawn, '--boot'], { env, allowFailure: true, timeoutMs: 180_000 });
    const p = join(inst.dir, 'root/probe');
    const read = (f: string): string => { try { return readFileSync(join(p, f), 'utf8'); } catch { return ''; } };
    if (!readdirSync(join(inst.dir, 'root')).includes('probe')) throw new Error(`the probe did not run (boot exit ${b.exitCode}): ${b.stdout.slice(-2000)}`);
    const lines = (f: string) => read(f).split('\n').map((l) => l.trim()).filter(Boolean);
    return {
      choice: read('choice').trim(),
      failed: lines('failed'),
      active: Object.fromEntries(lines('active').map((l) => l.split(' ') as [string, string])),
      tables: lines('tables'),
      journal: read('journal'),
      standins: lines('standins'),
      eth0: read('eth0'),
      forward: read('forward').trim(),
      ruleset: read('ruleset'),
      hook: { pid: read('hook-pid').trim(), cgroup: read('hook-cgroup'), units: read('hook-units'), restart: read('hook-restart').trim(), after: read('hook-after'), killMode: read('hook-killmode').trim() },
    };
  } finally {
    await inst.remove();
  }
}

/** Failed units of ours or upstream's networking (nspawn's own, like remount-fs, do not count). */
const qubesFailures = (p: Probe) => p.failed.filter((l) => /qubes/.test(l));

test('a client qube that chose qubes-net: upstream\'s units load our base ruleset and configure eth0 with our one-shot apply; our watcher follows; nothing fails', async (t) => {
  if (!needRoot(t)) return;
  const p = await boot({ 'qubes-net': '1' }, { eth0: true, qubesdb: CLIENT_KEYS });
  assert.equal(p.choice, 'ours');
  assert.deepEqual(qubesFailures(p), [], p.journal.split('\n').filter((l) => /eth0|uplink|guest|qubesdb|qdb/i.test(l)).join('\n'));
  // Upstream's uplink unit ran our one-shot apply (setup-ip is our dispatcher), and our watcher follows.
  assert.equal(p.active['qubes-network-uplink@eth0.service'], 'active', p.journal.split('\n').filter((l) => /eth0|uplink|guest/.test(l)).join('\n'));
  assert.match(p.eth0, /inet 10\.137\.0\.5\/32 /, p.eth0);
  assert.equal(p.active['qubes-net-uplink-watch@eth0.service'], 'active');
  for (const u of ['qubes-net-choice.service', 'qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network-uplink.service']) assert.equal(p.active[u], 'active', u);
  assert.deepEqual(p.tables, ['table ip qubes', 'table ip6 qubes'], 'our base ruleset, without the firewall skeleton');
  assert.ok(!p.standins.some((l) => /qubes-iptables|qubes-firewall/.test(l)), `upstream's scripts did not run: ${p.standins.join('; ')}`);
  assert.match(p.journal, /qubes-net-choice: this qube runs the ours networking agents/);
});

let proxy: Probe | undefined;

test('a network qube that chose qubes-net: the agent socket listens and qubes-firewall\'s watcher socket-activates the agent', async (t) => {
  if (!needRoot(t)) return;
  const p = await boot({ 'qubes-net': '1', 'qubes-network': '1', 'qubes-firewall': '1' }, { eth0: true, qubesdb: PROXY_KEYS, userScript: true });
  proxy = p;
  assert.equal(p.choice, 'ours');
  // The agent's own fate is the next test's.
  assert.deepEqual(qubesFailures(p).filter((l) => !l.startsWith('qubes-net-agent.service')), [], p.journal.split('\n').filter((l) => /agent|firewall|uplink/i.test(l)).join('\n'));
  assert.equal(p.active['qubes-net-agent.socket'], 'active');
  assert.equal(p.active['qubes-firewall.service'], 'active');
  assert.equal(p.active['qubes-network.service'], 'active');
  assert.notEqual(p.active['qubes-net-agent-watch.service'], 'active', 'the watcher runs as qubes-firewall.service here');
  // One watcher for the agent and the uplink: the uplink's own watcher unit stands down.
  assert.notEqual(p.active['qubes-net-uplink-watch@eth0.service'], 'active', 'the network qube\'s one watcher carries the uplink');
  assert.match(p.journal, /"group":1,"msg":"watching"[^\n]*"links":1,"action":"run"/, 'the watcher\'s second group follows the uplink');
  assert.deepEqual(p.tables, ['table ip qubes', 'table ip6 qubes', 'table ip qubes-firewall', 'table ip6 qubes-firewall']);
  assert.match(p.journal, /request sent[^\n]*agent\.sock[\s\S]*Started qubes-net-agent\.service/);
  assert.ok(!p.standins.some((l) => /qubes-iptables|qubes-firewall|network-proxy-setup/.test(l)), p.standins.join('; '));
});

test('the proxy qube\'s agent runs under its unit: forwarding on, DNS mapped', (t) => {
  if (!needRoot(t)) return;
  assert.ok(proxy, 'the previous test booted the proxy qube');
  const agentLog = proxy.journal.split('\n').filter((l) => /network-agent|qubes-net-agent|driver|firewall/i.test(l)).join('\n');
  assert.ok(!/status=11\/SEGV/.test(proxy.journal), `the agent crashed:\n${agentLog}`);
  assert.equal(proxy.active['qubes-net-agent.service'], 'active', `the agent runs (its idle exit is 30 s away):\n${agentLog}`);
  assert.equal(proxy.forward, '1', agentLog);
  assert.match(proxy.ruleset, /10\.139\.1\.1/);
});

test('the firewall user script backgrounds a daemon: the script returns at once, the daemon lives in a scope of its own and survives the agent\'s restart', (t) => {
  if (!needRoot(t)) return;
  assert.ok(proxy, 'the proxy qube test booted the qube');
  const agentLog = proxy.journal.split('\n').filter((l) => /network-agent|qubes-net-agent|hook|firewall/i.test(l)).join('\n');
  // Returned at once: the probe ran 3 s after boot, far inside the hook's 120 s limit.
  assert.match(proxy.journal, /hook ran[^\n]*qubes-firewall-user-script|qubes-firewall-user-script[^\n]*hook ran/, agentLog);
  assert.match(proxy.hook.pid, /^\d+$/, `the script wrote its daemon's PID:\n${agentLog}`);
  assert.match(proxy.hook.cgroup, /\/qubes-net-hook-[0-9a-f]{12}\.scope$/m, proxy.hook.cgroup);
  assert.doesNotMatch(proxy.hook.cgroup, /qubes-net-agent\.service/);
  assert.match(proxy.hook.units, /^qubes-net-hook-[0-9a-f]{12}\.scope\s+loaded\s+active\s+running/m, proxy.hook.units);
  // What the agent itself starts (an `ip` session child) is not spared when it stops.
  assert.equal(proxy.hook.killMode, 'KillMode=control-group');
  assert.equal(proxy.hook.restart, '0', 'systemctl restart qubes-net-agent.service succeeded');
  assert.equal(proxy.hook.after, proxy.hook.cgroup, 'the daemon survived the agent\'s restart, in the same scope');
  const unified = proxy.hook.cgroup.split('\n').find((l) => l.startsWith('0::')) ?? proxy.hook.cgroup.trim();
  t.diagnostic(`daemon ${proxy.hook.pid} in ${unified}, alive after the agent's restart`);
});

test('a network qube that chose upstream (qvm-service --disable qubes-net): upstream\'s scripts run under the same units', async (t) => {
  if (!needRoot(t)) return;
  const p = await boot({ 'qubes-net': '0', 'qubes-network': '1', 'qubes-firewall': '1' }, { eth0: true });
  assert.equal(p.choice, 'upstream');
  // The uplink unit qubes.WaitForNetworkUplink polls is active, having run upstream's setup-ip.
  assert.equal(p.active['qubes-network-uplink@eth0.service'], 'active', p.journal.split('\n').filter((l) => /eth0|uplink/.test(l)).join('\n'));
  assert.ok(p.standins.includes('/usr/lib/qubes/setup-ip 4.3.20-1+deb13u1 add eth0'), p.standins.join('; '));
  assert.deepEqual(qubesFailures(p), []);
  for (const u of ['qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network.service', 'qubes-firewall.service']) assert.equal(p.active[u], 'active', u);
  assert.notEqual(p.active['qubes-net-agent.socket'], 'active');
  assert.deepEqual(p.tables, [], "upstream's (stand-in) rulesets are empty");
  for (const ran of ['/usr/lib/qubes/init/qubes-iptables 4.3.20-1+deb13u1 start', '/usr/bin/qubes-firewall 4.3.20-1+deb13u1', '/usr/lib/qubes/init/network-proxy-setup.sh 4.3.20-1+deb13u1']) {
    assert.ok(p.standins.includes(ran), `${ran} in ${p.standins.join('; ')}`);
  }
});
