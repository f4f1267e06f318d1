#!/usr/bin/env node
// Stand-ins for the Qubes packages a Debian template has, for the packaging round trips: the
// same package names, versions, relations and paths as upstream's (facts from the reference, no
// upstream code), each file a small script that appends one line to /var/log/qubes-standins.log
// when it runs. They behave as the real ones do where it matters to qubes-net: the networking
// package's /etc files are conffiles, its postinst enables its units (so a booted template
// starts upstream's units), its prerm disables them, and the NetworkManager package depends on
// the networking package's exact version.
//
// Usage: node packaging/standins/build.mjs --out DIR [--version 4.3.20-1+deb13u1] [--rpm]
// Prints one JSON line: {"version", "debs": {name: path}, "files": {package: {path: sha256}},
// "rpms": {name: path}} (--rpm: qubes-core-agent-networking as an RPM too, e.g. --version 4.3.20-1.fc41)
// (files: every regular file of each package, to check byte for byte after a round trip).
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '@qubes-net/common';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const LOG = '/var/log/qubes-standins.log';

/** A stand-in executable: records that it ran, with its arguments, and succeeds. */
function script(path, version) {
  return `#!/bin/sh
# Stand-in for upstream's ${path} (${version}), built by qubes-net's packaging tests.
echo "${path} ${version} $*" >>${LOG}
exit 0
`;
}

function unit(description, lines) {
  return `# Stand-in for upstream's unit (qubes-net packaging tests).\n[Unit]\nDescription=${description}\n${lines}\n`;
}

/**
 * Upstream's boot-time uplink wait, as the reference describes it (§3.1): the interface whose MAC
 * is /qubes-mac, else eth0, then start qubes-network-uplink@IFACE so that the uplink is configured
 * before network.target. Records that it ran like every stand-in.
 */
function uplinkWait(version) {
  return `#!/bin/sh
# Stand-in for upstream's /usr/lib/qubes/init/network-uplink-wait.sh (${version}), built by qubes-net's packaging tests.
echo "/usr/lib/qubes/init/network-uplink-wait.sh ${version} $*" >>${LOG}
mac=$(qubesdb-read /qubes-mac 2>/dev/null) || mac=
iface=
for dev in /sys/class/net/*; do
    [ -n "$mac" ] && [ "$(cat "$dev/address" 2>/dev/null)" = "$mac" ] && iface=\${dev##*/} && break
done
[ -n "$iface" ] || iface=eth0
[ -e "/sys/class/net/$iface" ] || exit 0
exec systemctl start "qubes-network-uplink@$iface.service"
`;
}

/** Upstream's udev rule as the reference describes it (§3.1), in our own words. */
const UDEV_RULE = `SUBSYSTEMS=="xen", KERNEL=="eth*", DRIVERS=="vif", ACTION=="add", RUN+="/usr/bin/systemctl restart --job-mode=replace qubes-network-uplink@%k.service"
SUBSYSTEMS=="xen", KERNEL=="eth*", ENV{NET_ID_DRIVER}=="vif", ACTION=="add", RUN+="/usr/bin/systemctl restart --job-mode=replace qubes-network-uplink@%k.service"
KERNEL=="eth*", ACTION=="remove", ENV{ID_NET_DRIVER}=="vif", RUN+="/usr/bin/systemctl stop --job-mode=replace qubes-network-uplink@%k.service"
`;

const ET = '/etc/qubes';
/** upstream unit name → its [Unit]/[Service]/[Install] text, after the reference (§7.2). */
const NETWORKING_UNITS = {
  'qubes-antispoof.service': unit('Qubes anti-spoofing firewall rules', `Before=network-pre.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/nft -f ${ET}/qubes-antispoof.nft\n\n[Install]\nRequiredBy=network-pre.target`),
  'qubes-iptables.service': unit('Qubes base firewall settings', `Requires=qubes-antispoof.service\nAfter=qubes-antispoof.service\nBefore=network-pre.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/init/qubes-iptables start\n\n[Install]\nRequiredBy=network-pre.target`),
  'qubes-network-uplink@.service': unit('Qubes network uplink (%i) setup', `After=network-pre.target\nRequires=network-pre.target\nBefore=network.target\nWants=network.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/setup-ip add "%i"\nExecStop=/usr/lib/qubes/setup-ip remove "%i"`),
  'qubes-network-uplink.service': unit('Qubes network uplink wait', `Before=network.target\nWants=network.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/init/network-uplink-wait.sh\n\n[Install]\nWantedBy=multi-user.target`),
  'qubes-network.service': unit('Qubes network forwarding setup', `ConditionPathExists=/var/run/qubes-service/qubes-network\nBefore=network.target\nAfter=network-pre.target qubes-iptables.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/init/network-proxy-setup.sh\nExecStop=/usr/lib/qubes/init/network-proxy-stop.sh\n\n[Install]\nWantedBy=multi-user.target`),
  'qubes-firewall.service': unit('Qubes firewall updater', `ConditionPathExists=/var/run/qubes-service/qubes-firewall\nAfter=qubes-iptables.service\nBefore=qubes-network.service\n\n[Service]\nType=notify-reload\nExecStart=/usr/bin/qubes-firewall\nRestart=on-failure\nRestartSec=5s\n\n[Install]\nWantedBy=multi-user.target`),
  'qubes-updates-proxy.service': unit('Qubes updates proxy (tinyproxy)', `ConditionPathExists=/var/run/qubes-service/qubes-updates-proxy\nAfter=qubes-iptables.service\n\n[Service]\nExecStart=/usr/lib/qubes/init/updates-proxy-standin\n\n[Install]\nWantedBy=multi-user.target`),
};
/**
 * The core agent's early units that networking relies on (reference §7.2): qubes-sysinit turns
 * /qubes-service/* into /run/qubes-service flags; qubes-early-vm-config wants network-pre.target,
 * which is what pulls in qubes-antispoof/qubes-iptables (RequiredBy=network-pre.target) at boot.
 */
const CORE_UNITS = {
  'qubes-sysinit.service': unit('Init Qubes Services settings', `DefaultDependencies=no\nAfter=systemd-modules-load.service qubes-db.service\nBefore=sysinit.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/init/qubes-sysinit.sh\n\n[Install]\nWantedBy=sysinit.target`),
  'qubes-early-vm-config.service': unit('Early Qubes VM settings', `DefaultDependencies=no\nWants=network-pre.target\nBefore=sysinit.target network-pre.target\nAfter=local-fs.target qubes-db.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/lib/qubes/init/qubes-early-vm-config.sh\n\n[Install]\nWantedBy=sysinit.target`),
};

/** qubes-sysinit's service flags: "1" → /run/qubes-service/NAME, "0" → none (reference §3.8). */
function sysinit(version) {
  return `#!/bin/sh
# Stand-in for upstream's /usr/lib/qubes/init/qubes-sysinit.sh (${version}), built by qubes-net's packaging tests.
echo "/usr/lib/qubes/init/qubes-sysinit.sh ${version} $*" >>${LOG}
mkdir -p /run/qubes-service
db=\${QUBESDB_STANDIN_DIR:-/var/lib/qubesdb-standin}/qubes-service
[ -d "$db" ] || exit 0
for f in "$db"/*; do
    [ -f "$f" ] || continue
    name=\${f##*/}
    case "$(cat "$f")" in
        1) : >"/run/qubes-service/$name" ;;
        0) rm -f "/run/qubes-service/$name" ;;
    esac
done
`;
}

const ENABLED = ['qubes-antispoof.service', 'qubes-iptables.service', 'qubes-network-uplink.service', 'qubes-network.service', 'qubes-firewall.service', 'qubes-updates-proxy.service'];

/** The packages: name → {depends, files: {path: {text|link|copy, mode, conffile}}, postinst, prerm}. */
function packages(version) {
  const exe = (path) => ({ text: script(path, version), mode: 0o755 });
  const conf = (text, mode = 0o644) => ({ text: `# Stand-in (${version})\n${text}`, mode, conffile: true });
  const nft = { text: `# Stand-in ruleset (${version}): nothing to load\n`, mode: 0o400, conffile: true };
  const networking = {
    depends: `qubes-core-agent (= ${version}), nftables, iproute2, conntrack`,
    files: {
      '/etc/xen/scripts/vif-route-qubes': { ...exe('/etc/xen/scripts/vif-route-qubes'), conffile: true },
      '/etc/xen/scripts/vif-qubes-nat.sh': { ...exe('/etc/xen/scripts/vif-qubes-nat.sh'), conffile: true },
      '/usr/lib/qubes/setup-ip': exe('/usr/lib/qubes/setup-ip'),
      '/usr/lib/qubes/qubes-setup-dnat-to-ns': exe('/usr/lib/qubes/qubes-setup-dnat-to-ns'),
      // A Type=notify-reload daemon: records, tells systemd it is ready (as its main process,
      // so it works without NotifyAccess=all too), then stays.
      '/usr/bin/qubes-firewall': { text: script('/usr/bin/qubes-firewall', version).replace('exit 0\n', `[ -z "$NOTIFY_SOCKET" ] || exec systemd-notify --exec --ready ';' sleep infinity\nexit 0\n`), mode: 0o755 },
      '/usr/lib/qubes/init/network-proxy-setup.sh': exe('/usr/lib/qubes/init/network-proxy-setup.sh'),
      '/usr/lib/qubes/init/network-proxy-stop.sh': exe('/usr/lib/qubes/init/network-proxy-stop.sh'),
      '/usr/lib/qubes/init/network-uplink-wait.sh': { text: uplinkWait(version), mode: 0o755 },
      '/usr/lib/qubes/init/qubes-iptables': exe('/usr/lib/qubes/init/qubes-iptables'),
      '/usr/lib/qubes/init/updates-proxy-standin': exe('/usr/lib/qubes/init/updates-proxy-standin'),
      '/etc/qubes/qubes-antispoof.nft': nft,
      '/etc/qubes/qubes-ipv4.nft': nft,
      '/etc/qubes/qubes-ipv6.nft': nft,
      '/etc/qubes/qubes-ipv6-disabled.nft': nft,
      '/etc/udev/rules.d/99-qubes-network.rules': conf(UDEV_RULE),
      '/etc/dhclient.d/qubes-setup-dnat-to-ns.sh': { link: '../../usr/lib/qubes/qubes-setup-dnat-to-ns' },
      '/etc/qubes-rpc/qubes.UpdatesProxy': { ...exe('/etc/qubes-rpc/qubes.UpdatesProxy'), conffile: true },
      '/etc/tinyproxy/tinyproxy-updates.conf': conf('Port 8082\n'),
      '/usr/lib/systemd/network/80-qubes-vif.link': { text: `# Stand-in (${version})\n[Match]\nDriver=vif\n\n[Link]\nNamePolicy=\n`, mode: 0o644 },
      '/usr/lib/tmpfiles.d/qubes-core-agent-linux.conf': { text: `# Stand-in (${version})\nd /run/xen 0700 root root -\n`, mode: 0o644 },
      ...Object.fromEntries(Object.entries(NETWORKING_UNITS).map(([name, text]) => [`/usr/lib/systemd/system/${name}`, { text: text.replace('# Stand-in', `# Stand-in (${version})`), mode: 0o644 }])),
    },
    // What debhelper's generated snippets do: enable on install, disable on removal.
    postinst: `if [ "$1" = configure ] && [ -z "$2" ]; then systemctl --no-reload enable ${ENABLED.join(' ')} >/dev/null 2>&1 || :; fi`,
    prerm: `if [ "$1" = remove ]; then systemctl --no-reload disable ${ENABLED.join(' ')} >/dev/null 2>&1 || :; fi`,
  };
  return {
    libqubesdb: {
      depends: 'libc6',
      // Our own libqubesdb.so (upstream's ABI, written in this project), so the agents can load it.
      files: { '/usr/lib/libqubesdb.so': { copy: join(root, 'native-bindings/build/libqubesdb.so'), mode: 0o644 } },
    },
    qubesdb: {
      depends: `libqubesdb (= ${version})`,
      files: {
        // Reads the test's stand-in database: one file per key under /var/lib/qubesdb-standin.
        // A test's stand-in database (one file per key under /var/lib/qubesdb-standin), else the
        // QubesDB daemon a booted lab runs, through qubes-net's own CLI; exit 2 when absent.
        '/usr/bin/qubesdb-read': {
          text: `#!/bin/sh
# Stand-in qubesdb-read (${version}), built by qubes-net's packaging tests.
db=\${QUBESDB_STANDIN_DIR:-/var/lib/qubesdb-standin}
if [ ! -d "$db" ] && command -v qubes-net-qdb >/dev/null 2>&1; then
    exec qubes-net-qdb read "$@"
fi
for key in "$@"; do
    case "$key" in -*) continue ;; esac
    [ -f "$db$key" ] || exit 2
    cat "$db$key"; echo
done
`,
          mode: 0o755,
        },
      },
    },
    'qubes-core-agent': {
      depends: `qubesdb (= ${version}), systemd`,
      files: {
        '/usr/bin/qvm-features-request': exe('/usr/bin/qvm-features-request'),
        '/usr/lib/qubes/init/functions': { text: `# Stand-in (${version})\n`, mode: 0o644 },
        '/usr/lib/qubes/init/qubes-sysinit.sh': { text: sysinit(version), mode: 0o755 },
        '/usr/lib/qubes/init/qubes-early-vm-config.sh': exe('/usr/lib/qubes/init/qubes-early-vm-config.sh'),
        ...Object.fromEntries(Object.entries(CORE_UNITS).map(([name, text]) => [`/usr/lib/systemd/system/${name}`, { text: text.replace('# Stand-in', `# Stand-in (${version})`), mode: 0o644 }])),
      },
      postinst: `if [ "$1" = configure ] && [ -z "$2" ]; then systemctl --no-reload enable ${Object.keys(CORE_UNITS).join(' ')} >/dev/null 2>&1 || :; fi`,
      prerm: `if [ "$1" = remove ]; then systemctl --no-reload disable ${Object.keys(CORE_UNITS).join(' ')} >/dev/null 2>&1 || :; fi`,
    },
    'qubes-core-agent-networking': networking,
    'qubes-core-agent-network-manager': {
      depends: `qubes-core-agent-networking (= ${version})`,
      files: {
        '/usr/lib/qubes/network-manager-prepare-conf-dir': exe('/usr/lib/qubes/network-manager-prepare-conf-dir'),
        '/usr/lib/NetworkManager/conf.d/30-qubes.conf': { text: `# Stand-in (${version})\n[main]\nrc-manager=file\n`, mode: 0o644 },
      },
    },
  };
}

async function buildDeb(name, spec, version, out) {
  const dir = join(out, `${name}.tree`);
  rmSync(dir, { recursive: true, force: true });
  const sums = {};
  for (const [path, f] of Object.entries(spec.files)) {
    const dst = join(dir, path);
    mkdirSync(dirname(dst), { recursive: true });
    if (f.link) {
      symlinkSync(f.link, dst);
      continue;
    }
    const data = f.copy ? readFileSync(f.copy) : Buffer.from(f.text);
    writeFileSync(dst, data);
    chmodSync(dst, f.mode);
    sums[path] = createHash('sha256').update(data).digest('hex');
  }
  mkdirSync(join(dir, 'DEBIAN'));
  writeFileSync(join(dir, 'DEBIAN/control'), [
    `Package: ${name}`, `Version: ${version}`, 'Architecture: amd64', 'Maintainer: qubes-net tests <tests@example.org>',
    `Depends: ${spec.depends}`, 'Section: admin', 'Priority: optional',
    `Description: stand-in for the Qubes package ${name}`, ' Built by qubes-net packaging tests; each file records that it ran.', '',
  ].join('\n'));
  const conffiles = Object.entries(spec.files).filter(([, f]) => f.conffile).map(([p]) => p);
  if (conffiles.length) writeFileSync(join(dir, 'DEBIAN/conffiles'), conffiles.map((p) => `${p}\n`).join(''));
  for (const s of ['postinst', 'prerm']) {
    if (!spec[s]) continue;
    writeFileSync(join(dir, 'DEBIAN', s), `#!/bin/sh\nset -e\n${spec[s]}\nexit 0\n`);
    chmodSync(join(dir, 'DEBIAN', s), 0o755);
  }
  const deb = join(out, `${name}_${version}_amd64.deb`);
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', dir, deb], { env: { LC_ALL: 'C' } });
  rmSync(dir, { recursive: true, force: true });
  return { deb, sums };
}

/**
 * The networking stand-in as an RPM too (Fedora template), for the RPM scriptlets' round trip:
 * VERSION is split at the last '-' into Version and Release. Its files are the .deb's; no
 * scriptlets of its own are needed by that test.
 */
async function buildRpm(name, spec, version, out) {
  const cut = version.lastIndexOf('-');
  const [ver, rel] = [version.slice(0, cut), version.slice(cut + 1)];
  const top = join(out, `${name}.rpmbuild`);
  const stage = join(top, 'stage');
  rmSync(top, { recursive: true, force: true });
  const files = [];
  for (const [path, f] of Object.entries(spec.files)) {
    const dst = join(stage, path);
    mkdirSync(dirname(dst), { recursive: true });
    if (f.link) symlinkSync(f.link, dst);
    else {
      writeFileSync(dst, f.copy ? readFileSync(f.copy) : Buffer.from(f.text));
      chmodSync(dst, f.mode);
    }
    // Fedora's package marks its nft rulesets and tinyproxy files %config(noreplace), not the
    // scripts (vif-route-qubes, the qubes-rpc service) that Debian's /etc rule makes conffiles.
    files.push(f.conffile && !(f.mode & 0o111) ? `%config(noreplace) ${path}` : path);
  }
  for (const d of ['BUILD', 'RPMS', 'SOURCES', 'SPECS', 'SRPMS', 'tmp']) mkdirSync(join(top, d), { recursive: true });
  const specFile = join(top, 'SPECS', `${name}.spec`);
  writeFileSync(specFile, [
    `Name: ${name}`, `Version: ${ver}`, `Release: ${rel}`, `Summary: stand-in for the Qubes package ${name}`, 'License: GPL-2.0-or-later',
    'BuildArch: noarch', 'AutoReqProv: no', '%global debug_package %{nil}', '%global __os_install_post %{nil}', '%global __brp_mangle_shebangs %{nil}',
    '%description', 'Built by qubes-net packaging tests; each file records that it ran.',
    '%prep', '%build', '%install', `cp -a ${stage}/. %{buildroot}/`, '%files', '%defattr(-,root,root,-)', ...files, '',
  ].join('\n'));
  await run('rpmbuild', ['-bb', '--quiet', '--define', `_topdir ${top}`, '--define', `_tmppath ${join(top, 'tmp')}`, specFile], { env: { LC_ALL: 'C' } });
  const rpm = join(out, `${name}-${ver}-${rel}.noarch.rpm`);
  await run('mv', [join(top, 'RPMS', 'noarch', `${name}-${ver}-${rel}.noarch.rpm`), rpm]);
  rmSync(top, { recursive: true, force: true });
  return rpm;
}

async function main() {
  const { values } = parseArgs({ options: { out: { type: 'string' }, version: { type: 'string' }, rpm: { type: 'boolean' } } });
  if (!values.out) throw new Error('usage: build.mjs --out DIR [--version V] [--rpm]');
  const version = values.version ?? '4.3.20-1+deb13u1';
  if (!/^[0-9][0-9A-Za-z.+~-]*$/.test(version)) throw new Error(`bad version ${version}`);
  const out = resolve(values.out);
  mkdirSync(out, { recursive: true });
  const result = { version, debs: {}, files: {}, rpms: {} };
  for (const [name, spec] of Object.entries(packages(version))) {
    const { deb, sums } = await buildDeb(name, spec, version, out);
    result.debs[name] = deb;
    result.files[name] = sums;
    if (values.rpm && name === 'qubes-core-agent-networking') result.rpms[name] = await buildRpm(name, spec, version, out);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err) => {
  process.stderr.write(`[standins] error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
