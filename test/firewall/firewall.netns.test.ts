// The firewall against the real kernel, with real traffic from client qubes through a netvm
// running our QubesDB daemon, the driver agent and `qubes-net-firewall run`, out to the fake
// internet. Scenarios share one network and run in order; each pushes rules the way dom0 does
// and waits for the firewall's feedback key, never for time.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, needRoot } from '../helpers/root.js';
import { waitFor } from '../helpers/wait.js';
import { FirewallLab, FIREWALL_CLI, DRIVER_CLI, C1, C1_V6, C2, WEB, WEB6, OTHER, DNS1, DNS2, VDNS1 } from './lab.js';

const DROP_ALL = { policy: 'drop' };
const ACCEPT_ALL = { policy: 'accept' };

describe('per-qube firewall in namespaces', { concurrency: false }, () => {
  let lab: FirewallLab;
  let c1: FirewallLab['netvm'];
  let c2: FirewallLab['netvm'];

  before(async () => {
    if (!isRoot()) return;
    lab = await FirewallLab.create('fw');
    c1 = await lab.addClient('c1', C1, C1_V6);
    c2 = await lab.addClient('c2', C2);
    // c2 is the control qube: everything allowed unless a test says otherwise.
    await lab.writeRules(C2, ACCEPT_ALL);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('before the firewall runs, forwarding is on but vif traffic meets the drop policy', async (t) => {
    if (!needRoot(t)) return;
    assert.equal((await lab.netvm.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1');
    const fwd = JSON.parse(await lab.nft(['-j', 'list', 'chain', 'ip', 'qubes-firewall', 'forward'])).nftables.find((x: any) => x.chain).chain;
    assert.equal(fwd.policy, 'drop');
    assert.equal(fwd.prio, 10);
    assert.equal(await lab.ping(c2, WEB), false);
    await lab.startFirewall();
    await waitFor('c2 applied', async () => (await lab.generation(C2)) > 0);
    assert.equal(await lab.ping(c2, WEB), true);
    assert.equal(await lab.ping(c1, WEB), false, 'a qube without rules stays dropped');
  });

  it('drop-all blocks ping and TCP', async (t) => {
    if (!needRoot(t)) return;
    assert.match(await lab.setRules(C1, DROP_ALL), /^\d+ ok 1 rules$/);
    assert.equal(await lab.ping(c1, WEB), false);
    assert.equal(await lab.http(c1, WEB), false);
    assert.equal(await lab.tcp(c1, WEB, 1234), false);
    assert.equal(await lab.http(c2, WEB), true, 'the other qube is untouched');
  });

  it('allowing icmp enables ping but not names; icmp + dns enables names', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept proto=icmp' });
    assert.equal(await lab.ping(c1, WEB), true);
    assert.equal(await lab.dns(c1, VDNS1), false);
    assert.equal(await lab.http(c1, WEB), false);
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept proto=icmp', '0001': 'action=accept specialtarget=dns' });
    assert.equal(await lab.dns(c1, VDNS1), true);
    assert.equal(await lab.ping(c1, WEB), true);
    assert.equal(await lab.http(c1, WEB), false);
  });

  it('dsthost + tcp + port: only that port of that host; /dns feedback; unresolvable names', async (t) => {
    if (!needRoot(t)) return;
    const out = await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept dsthost=www.example.test proto=tcp dstports=80-80' });
    assert.match(out, /^\d+ ok 2 rules$/);
    assert.equal(await lab.http(c1, WEB), true);
    assert.equal(await lab.http(c1, OTHER), false);
    assert.equal(await lab.tcp(c1, WEB, 1234), false);
    assert.equal(await lab.ping(c1, WEB), false);
    assert.equal(await lab.db.read(`/dns/${C1}/www.example.test`), `{'${WEB}/32'}`);
    // A name too long for a QubesDB path still works; only its /dns key is skipped, with a log line.
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.example.test`;
    assert.match(await lab.setRules(C1, { policy: 'drop', '0000': `action=accept dsthost=${long} proto=tcp dstports=1234-1234` }), /^\d+ ok 2 rules$/);
    assert.equal(await lab.tcp(c1, WEB, 1234), true);
    assert.equal(await lab.http(c1, WEB), false);
    assert.deepEqual(await lab.db.list(`/dns/${C1}/`), []);
    assert.ok(lab.firewall!.logs.some((l) => l.msg === 'dns feedback skipped: path too long' && l.ip === C1));
    // An unresolvable name in an accept rule: that rule alone is left out, and reported.
    const partial = await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept dsthost=nowhere.example.test', '0001': 'action=accept proto=icmp' });
    assert.match(partial, /^\d+ partial rule 0000 left out: dsthost nowhere.example.test did not resolve/);
    assert.equal(await lab.ping(c1, WEB), true);
    // In a drop rule it blocks the qube.
    const blocked = await lab.setRules(C1, { policy: 'accept', '0000': 'action=drop dsthost=nowhere.example.test' });
    assert.match(blocked, /^\d+ blocked rule 0000: dsthost nowhere.example.test/);
    assert.equal(await lab.ping(c1, WEB), false);
    assert.equal(await lab.http(c1, OTHER), false);
  });

  it('a drop rule before an accept wins', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=drop proto=tcp dstports=4321-4321', '0001': 'action=accept' });
    assert.equal(await lab.tcp(c1, WEB, 4321), false);
    assert.equal(await lab.tcp(c1, WEB, 1234), true);
    assert.equal(await lab.ping(c1, WEB), true);
  });

  it('an established TCP flow is cut by a rule change while another continues', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, ACCEPT_ALL);
    const kept = lab.hold(c1, WEB, 1234);
    const cut = lab.hold(c1, WEB, 4321);
    t.after(() => { kept.child.kill('SIGKILL'); cut.child.kill('SIGKILL'); });
    await waitFor('both flows echoing', () => kept.echoes() > 3 && cut.echoes() > 3);
    const logFrom = lab.firewall!.logs.length;
    await lab.setRules(C1, { policy: 'accept', '0000': 'action=drop proto=tcp dstports=4000-5000' });
    await waitFor('the 4321 flow broken', () => cut.broken());
    const mark = kept.echoes();
    await waitFor('the 1234 flow still echoing', () => kept.echoes() > mark + 5);
    assert.equal(kept.broken(), false);
    const cuts = lab.firewall!.logs.slice(logFrom).filter((l) => l.msg === 'connection cut');
    assert.ok(cuts.some((l) => l.ip === C1 && l.dport === 4321));
    assert.ok(!cuts.some((l) => l.dport === 1234));
  });

  it('IPv6 rules', async (t) => {
    if (!needRoot(t)) return;
    const out = await lab.setRules(C1_V6, { policy: 'drop', '0000': `action=accept dst6=${WEB6}/128 proto=tcp dstports=80-80` });
    assert.match(out, /^\d+ ok 2 rules$/);
    assert.equal(await lab.http(c1, WEB6), true);
    assert.equal(await lab.ping(c1, WEB6), false);
    await lab.setRules(C1_V6, { policy: 'drop', '0000': 'action=accept proto=icmp', '0001': 'action=accept dsthost=ipv6only.example.test proto=tcp' });
    assert.equal(await lab.ping(c1, WEB6), true);
    assert.equal(await lab.http(c1, WEB6), true);
    assert.match(await lab.nft(['list', 'chain', 'ip6', 'qubes-firewall', 'qbs-fd09-24ef-4179--a89-7']), /meta l4proto ipv6-icmp accept/);
    await lab.setRules(C1_V6, DROP_ALL);
    assert.equal(await lab.ping(c1, WEB6), false);
    assert.equal(await lab.ping(c1, WEB), true, 'the IPv4 side has its own rules');
  });

  it("one qube's bad rules block that qube and leave the other's traffic untouched", async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, ACCEPT_ALL);
    const out = await lab.setRules(C2, { policy: 'accept', '0000': 'action=accept proto=tcp dstports=80', '0001': 'garbage\u0001' });
    assert.match(out, /^\d+ blocked invalid rules: 0000: bad-ports/);
    assert.equal(await lab.ping(c2, WEB), false);
    assert.equal(await lab.http(c2, WEB), false);
    assert.equal(await lab.http(c1, WEB), true);
    assert.equal(lab.firewall!.child.exitCode, null, 'the daemon keeps running');
    assert.ok(lab.firewall!.logs.some((l) => l.msg === 'invalid rules: blocking the qube' && l.ip === C2));
    await lab.setRules(C2, ACCEPT_ALL);
    assert.equal(await lab.http(c2, WEB), true);
  });

  it('names are re-resolved when their TTL runs out', async (t) => {
    if (!needRoot(t)) return;
    await lab.internet.setHosts([{ name: 'moving.example.test', addresses: [WEB] }]);
    t.after(() => lab.internet.setHosts([]));
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept dsthost=moving.example.test proto=tcp dstports=80-80' });
    assert.equal(await lab.http(c1, WEB), true);
    assert.equal(await lab.http(c1, OTHER), false);
    await lab.internet.setHosts([{ name: 'moving.example.test', addresses: [OTHER] }]);
    await waitFor('the new address applied', async () => (await lab.db.read(`/dns/${C1}/moving.example.test`)) === `{'${OTHER}/32'}`);
    assert.equal(await lab.http(c1, OTHER), true);
    assert.equal(await lab.http(c1, WEB), false);
  });

  it('removed entries remove the chain: the qube falls back to the drop policy', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, ACCEPT_ALL);
    assert.equal(await lab.ping(c1, WEB), true);
    await lab.db.rm(`/qubes-firewall/${C1}/`);
    await lab.db.rm(`/qubes-firewall/${C1}`);
    await waitFor('applied key removed', async () => (await lab.db.read(`/qubes-firewall-applied/${C1}`)) === undefined);
    assert.doesNotMatch(await lab.nft(['list', 'table', 'ip', 'qubes-firewall']), /qbs-10-137-0-7/);
    assert.equal(await lab.ping(c1, WEB), false);
  });

  it('changed upstream DNS: dns-addr follows the netvm resolv.conf', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept specialtarget=dns' });
    assert.equal(await lab.dns(c1, VDNS1), true);
    assert.equal(await lab.dns(c1, DNS1), true, 'a resolver of this VM, asked directly');
    // What NetworkManager's hook does on a DNS change: new resolv.conf, then tell the driver
    // (which re-DNATs the virtual DNS and signals the firewall; the firewall watches the file too).
    await writeFile(lab.netvm.hostPath('/etc/resolv.conf'), `nameserver ${DNS2}\n`);
    await lab.netvm.exec(process.execPath, [DRIVER_CLI, 'dns-changed']);
    t.after(async () => {
      await writeFile(lab.netvm.hostPath('/etc/resolv.conf'), `nameserver ${DNS1}\nnameserver ${DNS2}\n`);
      await lab.netvm.exec(process.execPath, [DRIVER_CLI, 'dns-changed']);
    });
    await waitFor('dns-addr updated', async () => !(await lab.nft(['list', 'set', 'ip', 'qubes-firewall', 'dns-addr'])).includes(DNS1));
    assert.match(await lab.nft(['list', 'set', 'ip', 'qubes-firewall', 'dns-addr']), new RegExp(DNS2.replace(/\./g, '\\.')));
    await waitFor('names through the virtual DNS again', () => lab.dns(c1, VDNS1));
    assert.equal(await lab.dns(c1, DNS2), true);
    assert.equal(await lab.dns(c1, DNS1), false, 'no longer a resolver of this VM');
  });

  it('stop keeps the rules in force; a restart breaks no established flow; a crash keeps them too', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, DROP_ALL);
    await lab.setRules(C2, ACCEPT_ALL);
    const flow = lab.hold(c2, WEB, 1234, 3000);
    t.after(() => flow.child.kill('SIGKILL'));
    await waitFor('flow echoing', () => flow.echoes() > 3);
    assert.equal(await lab.stopFirewall('SIGTERM'), 0);
    assert.equal(await lab.ping(c1, WEB), false, 'drop-all still in force after stop');
    assert.equal(await lab.http(c2, WEB), true, 'allowed traffic still allowed after stop');
    // Restarted with the nft binary instead of libnftables: the same kernel state results.
    await lab.startFirewall(['--no-hooks', '--nft-binary']);
    assert.ok(lab.firewall!.logs.some((l) => l.applier === 'nft'));
    const mark = flow.echoes();
    await waitFor('flow still echoing after restart', () => flow.echoes() > mark + 5);
    assert.equal(flow.broken(), false);
    assert.equal(await lab.ping(c1, WEB), false);
    await lab.stopFirewall('SIGKILL');
    assert.equal(await lab.ping(c1, WEB), false);
    assert.equal(await lab.http(c2, WEB), true);
    await lab.startFirewall();
  });

  it('user hooks run once at start; user chains survive reloads and updates; custom-persist skips /rw', async (t) => {
    if (!needRoot(t)) return;
    await lab.stopFirewall();
    const hook = (name: string) => `#!/bin/sh\necho ${name} >> /run/hook-log\n`;
    await lab.writeNetvmFile('/etc/qubes/qubes-firewall.d/50-user-chain', '#!/bin/sh\necho etc >> /run/hook-log\nnft add chain ip qubes-firewall custom-user\nnft add rule ip qubes-firewall custom-user counter\n', 0o755);
    await lab.writeNetvmFile('/rw/config/qubes-firewall.d/10-rw', hook('rw'), 0o755);
    await lab.writeNetvmFile('/rw/config/qubes-firewall-user-script', hook('user-script'), 0o755);
    await lab.writeNetvmFile('/rw/config/qubes-firewall.d/20-not-executable', hook('not-exec'), 0o644);
    await lab.startFirewall([]);
    const log = () => readFile(lab.netvm.hostPath('/run/hook-log'), 'utf8');
    assert.deepEqual((await log()).trim().split('\n'), ['etc', 'rw', 'user-script']);
    assert.match(await lab.nft(['list', 'chain', 'ip', 'qubes-firewall', 'custom-user']), /counter/);
    const before = await lab.generation(C2);
    lab.firewall!.child.kill('SIGHUP');
    await waitFor('reload done', () => lab.firewall!.logs.some((l) => l.msg === 'reload done'));
    assert.ok((await lab.generation(C2)) > before, 'every qube re-applied');
    await lab.setRules(C2, ACCEPT_ALL);
    assert.match(await lab.nft(['list', 'chain', 'ip', 'qubes-firewall', 'custom-user']), /counter/);
    assert.deepEqual((await log()).trim().split('\n'), ['etc', 'rw', 'user-script'], 'hooks are not re-run on reload');
    assert.equal(await lab.http(c2, WEB), true);

    await lab.stopFirewall();
    await writeFile(lab.netvm.hostPath('/run/hook-log'), '');
    await lab.db.write('/qubes-service/custom-persist', '1');
    t.after(() => lab.db.rm('/qubes-service/custom-persist'));
    await lab.startFirewall([]);
    assert.deepEqual((await log()).trim().split('\n'), ['etc']);
  });

  it("16.2: a user script adds to forward, qubes-forward, prerouting and postrouting; the rules act and survive a rebuild, a reload, a restart and the driver's restart", async (t) => {
    if (!needRoot(t)) return;
    await lab.stopFirewall();
    const script = [
      '#!/bin/sh',
      'set -e',
      `nft add rule ip qubes-firewall qubes-forward ip saddr ${C2} ip daddr ${OTHER} counter reject comment '"user-qf"'`,
      `nft add rule ip qubes-firewall forward ip daddr 192.0.2.99 counter drop comment '"user-fwd"'`,
      `nft add rule ip qubes-firewall prerouting ip saddr 192.0.2.98 counter drop comment '"user-pre"'`,
      `nft add rule ip qubes-firewall postrouting ip daddr 192.0.2.97 counter drop comment '"user-post"'`,
      'echo done > /run/user-script-ran',
    ].join('\n') + '\n';
    await lab.writeNetvmFile('/rw/config/qubes-firewall-user-script', script, 0o755);
    t.after(() => lab.writeNetvmFile('/rw/config/qubes-firewall-user-script', '#!/bin/sh\n', 0o755));
    await lab.startFirewall([]);
    assert.equal((await readFile(lab.netvm.hostPath('/run/user-script-ran'), 'utf8')).trim(), 'done', 'the script naming qubes-forward ran without error');
    const userRules = async () => {
      const out: string[] = [];
      for (const chain of ['forward', 'qubes-forward', 'prerouting', 'postrouting']) {
        const json = JSON.parse(await lab.nft(['-j', 'list', 'chain', 'ip', 'qubes-firewall', chain]));
        for (const x of json.nftables) if (x.rule?.comment?.startsWith('user-')) out.push(`${chain} ${x.rule.comment}`);
      }
      return out.sort();
    };
    const expected = ['forward user-fwd', 'postrouting user-post', 'prerouting user-pre', 'qubes-forward user-qf'];
    assert.deepEqual(await userRules(), expected);
    // Upstream's order: our rules first, the user's appended one after them.
    const fwd = await lab.nft(['list', 'chain', 'ip', 'qubes-firewall', 'forward']);
    assert.ok(fwd.indexOf('jump qubes-forward') < fwd.indexOf('192.0.2.99'), fwd);
    // The qubes-forward rule acts before the per-qube chain: c2 (accept all) cannot reach OTHER.
    await lab.setRules(C2, ACCEPT_ALL);
    assert.equal(await lab.http(c2, WEB), true);
    assert.equal(await lab.http(c2, OTHER), false);
    // A rebuild of a qube, a reload, a restart (without hooks, so nothing re-adds them), the
    // driver's restart (it loads the skeleton again): the user's rules stay, once each.
    await lab.setRules(C2, { policy: 'accept', '0000': 'action=accept proto=tcp' });
    lab.firewall!.child.kill('SIGHUP');
    await waitFor('reload done', () => lab.firewall!.logs.some((l) => l.msg === 'reload done'));
    assert.deepEqual(await userRules(), expected);
    await lab.stopFirewall();
    await lab.startFirewall(['--no-hooks']);
    assert.deepEqual(await userRules(), expected);
    lab.driver!.child.kill('SIGTERM');
    await lab.driver!.exited;
    await lab.startDriver();
    assert.deepEqual(await userRules(), expected);
    assert.equal((await lab.nft(['list', 'chain', 'ip', 'qubes-firewall', 'forward'])).match(/jump qubes-forward/g)?.length, 1, 'our rules exist once');
    await lab.setRules(C2, ACCEPT_ALL);
    assert.equal(await lab.http(c2, WEB), true);
    assert.equal(await lab.http(c2, OTHER), false, 'the user rule still acts');
    // Leave the network as the next tests expect it.
    await lab.nft(['flush', 'chain', 'ip', 'qubes-firewall', 'qubes-forward']);
    assert.equal(await lab.http(c2, OTHER), true);
  });

  it('systemd notify: READY=1 after the initial load; RELOADING=1 with MONOTONIC_USEC, then READY=1, on SIGHUP', async (t) => {
    if (!needRoot(t)) return;
    const dir = await mkdtemp(join(tmpdir(), 'qn-fw-notify-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const sock = join(dir, 'notify.sock');
    // A stand-in for systemd's notification socket (node has no unix datagram sockets).
    const listener = lab.netvm.spawn('python3', ['-u', '-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      `s.bind(${JSON.stringify(sock)})`,
      'print("bound", flush=True)',
      'while True: print(s.recv(4096).decode().replace("\\n", "|"), flush=True)',
    ].join('\n')]);
    t.after(() => listener.kill('SIGKILL'));
    let got = '';
    listener.stdout!.on('data', (d: Buffer) => (got += d.toString()));
    await waitFor('listener bound', () => got.includes('bound'));
    await lab.stopFirewall();
    await lab.startFirewall(['--no-hooks'], { NOTIFY_SOCKET: sock });
    await waitFor('READY=1', () => got.includes('READY=1'));
    lab.firewall!.child.kill('SIGHUP');
    await waitFor('reload notified', () => /RELOADING=1\|MONOTONIC_USEC=\d+\n(.|\n)*READY=1/.test(got.slice(got.indexOf('READY=1') + 7)));
  });

  it('status and render report what is in force', async (t) => {
    if (!needRoot(t)) return;
    await lab.setRules(C1, { policy: 'drop', '0000': 'action=accept proto=icmp' });
    const st = await lab.netvm.exec(process.execPath, [FIREWALL_CLI, 'status', '--json'], { allowFailure: true });
    const report = JSON.parse(st.stdout);
    assert.equal(report.daemon.running, true);
    assert.equal(report.daemon.ready, true);
    assert.equal(report.kernel.ipv4.forwardPolicy, 'drop');
    assert.equal(report.kernel.ipv4.forwardRules, true);
    assert.equal(report.kernel.ipv6.forwardRules, true);
    const q = report.qubes.find((x: any) => x.ip === C1);
    assert.equal(q.outcome, 'ok');
    assert.equal(q.inKernel, true);
    assert.equal(q.connected, true);
    const text = await lab.netvm.exec(process.execPath, [FIREWALL_CLI, 'render', C1]);
    assert.match(text.stdout, /add rule ip qubes-firewall qbs-10-137-0-7 meta l4proto icmp accept comment "0000"/);
    const chain = await lab.nft(['list', 'chain', 'ip', 'qubes-firewall', 'qbs-10-137-0-7']);
    assert.match(chain, /meta l4proto icmp accept comment "0000"/);
    const pid = (await readFile(lab.netvm.hostPath('/run/qubes-net/firewall.pid'), 'utf8')).trim();
    assert.equal(Number(pid), lab.firewall!.child.pid);
    const human = await lab.netvm.exec(process.execPath, [FIREWALL_CLI, 'status'], { allowFailure: true });
    assert.match(human.stdout, /^daemon: running/);
    assert.match(human.stdout, /10\.137\.0\.7\s+ok/);
  });

  it("1,000 qubes' rules loaded at once; traffic checked for a few of them", async (t) => {
    if (!needRoot(t)) return;
    await lab.stopFirewall();
    const addr = (i: number) => `10.137.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`;
    for (let i = 0; i < 1000; i++) {
      await lab.writeRules(addr(i), i % 2 === 0 ? { policy: 'drop', '0000': 'action=accept proto=tcp dstports=80-80' } : DROP_ALL);
    }
    const probes = [0, 1, 998];
    const qubes = [];
    for (const i of probes) qubes.push(await lab.addClient(`p${i}`, addr(i)));
    await lab.startFirewall();
    const ready = lab.firewall!.logs.find((l) => l.msg === 'firewall ready');
    assert.ok(ready && ready.qubes >= 1002, JSON.stringify(ready));
    assert.equal(await lab.db.read(`/qubes-firewall-applied/${addr(999)}`), '1 ok 1 rules');
    const dispatch = JSON.parse(await lab.nft(['-j', 'list', 'map', 'ip', 'qubes-firewall', 'dispatch'])).nftables.find((x: any) => x.map).map;
    assert.ok(dispatch.elem.length >= 1002);
    assert.equal(await lab.http(qubes[0]!, WEB), true);
    assert.equal(await lab.http(qubes[1]!, WEB), false);
    assert.equal(await lab.http(qubes[2]!, WEB), true);
    assert.equal(await lab.tcp(qubes[2]!, WEB, 1234), false);
    assert.equal(await lab.http(c2, WEB), true, 'c2 still allowed');
    // One qube changed among 1,000.
    await lab.setRules(addr(1), { policy: 'drop', '0000': 'action=accept proto=tcp dstports=80-80' });
    assert.equal(await lab.http(qubes[1]!, WEB), true);
  });
});
