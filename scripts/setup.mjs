#!/usr/bin/env node
// The whole set-up behind `npm start`, `npm test`, `npm run bench` and `npm run package`, so
// that each works on a fresh Debian machine: system packages (apt-get, as root), `npm ci`,
// the native library (make), then the TypeScript build (tsc -b). Each step is skipped when
// already done. Only node's own modules are used here: node_modules may not exist yet.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (msg) => process.stderr.write(`[setup] ${msg}\n`);

// Debian package → a file it provides that we check for.
const APT = {
  nftables: '/usr/sbin/nft',
  iproute2: '/usr/sbin/ip',
  conntrack: '/usr/sbin/conntrack',
  'dnsmasq-base': '/usr/sbin/dnsmasq',
  rpm: '/usr/bin/rpmbuild',
  'dpkg-dev': '/usr/bin/dpkg-deb',
  gcc: '/usr/bin/gcc',
  make: '/usr/bin/make',
  'util-linux': '/usr/bin/nsenter',
  procps: '/usr/sbin/sysctl',
  systemd: '/usr/bin/systemd-analyze',
  iputils_ping: '/usr/bin/ping',
  // the booted-template lab (issue 12): builds a Debian root and boots it as containers
  debootstrap: '/usr/sbin/debootstrap',
  'systemd-container': '/usr/bin/systemd-nspawn',
  // packaging (issue 11): the .deb's checks, strip and readelf of the C helpers
  lintian: '/usr/bin/lintian',
  binutils: '/usr/bin/strip',
};
const aptName = (k) => (k === 'iputils_ping' ? 'iputils-ping' : k);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) {
    say(`failed: ${cmd} ${args.join(' ')} (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

const missing = Object.entries(APT).filter(([, f]) => !existsSync(f)).map(([p]) => aptName(p));
if (missing.length) {
  if (process.getuid?.() !== 0) {
    say(`missing system packages: ${missing.join(' ')}. Install them as root (apt-get install ${missing.join(' ')}) or run this command with sudo.`);
    process.exit(1);
  }
  say(`installing system packages: ${missing.join(' ')}`);
  sh('apt-get', ['update', '-qq']);
  sh('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

const stamp = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
if (!existsSync(stamp) || statSync(stamp).mtimeMs < statSync(lock).mtimeMs) {
  say('installing node modules (npm ci)');
  sh('npm', ['ci', '--no-audit', '--no-fund']);
}

say('building native-bindings (libqubesdb.so and the hotplug client)');
sh('make', ['-s', '-C', 'native-bindings']);

say('building TypeScript (tsc -b)');
sh(join(root, 'node_modules', '.bin', 'tsc'), ['-b']);

say('bundling the one-shot entry points (scripts/bundle.mjs)');
sh(process.execPath, [join(root, 'scripts', 'bundle.mjs'), '--quiet']);
