// A layer over the template image with NetworkManager installed from Debian's own packages, for
// qubes with the `network-manager` service (a VPN ProxyVM, sys-net as upstream ships it). The
// base root and the template image stay untouched: the layer is a cached copy of the image
// (`ensureCachedRoot`), keyed by the image and the package set, so it is built once.
//
// NetworkManager's configuration is what a Qubes template's qubes-core-agent-network-manager
// leaves after its %post and its unit's ExecStartPre (reference §3.4, §7): the keyfile plugin
// only, vifs (MAC fe:ff:ff:ff:ff:ff) unmanaged, resolv.conf written as a file. One setting is the
// lab's: `no-auto-default=*`. On Qubes, NetworkManager starts after the uplink unit, so the
// keyfile "VM uplink eth0" is there when it first sees eth0; the lab runs the uplink unit only
// after the boot (it plays udev then), and without that setting NetworkManager would meanwhile
// start DHCP on eth0 in an automatic "Wired connection 1".
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '@qubes-net/common';
import { nspawnEnv, type TemplateImage } from './image.js';
import { ensureCachedRoot, hashKey, type RootLog } from './root.js';

/** Debian's packages the layer adds, without recommends (no ModemManager, wpasupplicant…). */
export const NM_PACKAGES: readonly string[] = ['network-manager'];

/** Bumped when the layer's build or configuration changes. */
const NM_LAYER_VERSION = 1;

export const NM_LAB_CONF = [
  '# qubes-net lab: NetworkManager as a Qubes template configures it (qubes-fix-nm-conf.sh,',
  '# network-manager-prepare-conf-dir), plus no-auto-default (see nm-layer.ts).',
  '[main]',
  'plugins=keyfile',
  'dns=default',
  'rc-manager=file',
  'no-auto-default=*',
  '',
  '[keyfile]',
  '# interface-name:vif*: the lab\'s vifs are veths, which have no permanent MAC for the mac: spec',
  '# to match (Xen\'s vifs have fe:ff:ff:ff:ff:ff as theirs).',
  'unmanaged-devices=mac:fe:ff:ff:ff:ff:ff;interface-name:vif*',
  '',
].join('\n');

/**
 * Upstream's drop-in condition (reference §7.2): NetworkManager starts only in qubes with the
 * `network-manager` service, so every other qube booting this layer runs as without it.
 */
export const NM_UNIT_DROPIN = [
  '# qubes-net lab: as qubes-core-agent-network-manager\'s drop-in, NetworkManager only where the service is on.',
  '[Unit]',
  'ConditionPathExists=/run/qubes-service/network-manager',
  '',
].join('\n');

/** Runs ARGV in the tree with nspawn, not booted; the network is the host's (apt downloads). */
async function inTree(tree: string, argv: readonly string[], timeoutMs: number): Promise<void> {
  const r = await run('systemd-nspawn', ['--register=no', '--keep-unit', '--quiet', '--resolv-conf=copy-host', '-D', tree, '--', ...argv], {
    env: { ...nspawnEnv(), DEBIAN_FRONTEND: 'noninteractive' }, allowFailure: true, timeoutMs,
  });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} in the NetworkManager layer failed (exit ${r.exitCode}): ${(r.stderr.trim() || r.stdout.trim()).slice(-2000)}`);
}

/** The template image with NetworkManager: built on first use, then from the cache. */
export async function ensureNetworkManagerImage(image: TemplateImage, log: RootLog = () => {}): Promise<TemplateImage> {
  const key = hashKey([NM_LAYER_VERSION, image.key, [...NM_PACKAGES].sort(), NM_LAB_CONF, NM_UNIT_DROPIN]);
  const layer = await ensureCachedRoot(`template-nm-${key}`, log, async (tmp) => {
    log('NetworkManager layer: copying the template image', { image: image.dir });
    await run('cp', ['--reflink=auto', '-a', '--', `${image.dir}/.`, tmp]);
    // No service may start while packages install: the tree shares the host's network here.
    const policy = join(tmp, 'usr', 'sbin', 'policy-rc.d');
    writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    log('NetworkManager layer: apt-get install', { packages: NM_PACKAGES });
    await inTree(tmp, ['apt-get', 'update', '-o', 'Acquire::Retries=3'], 10 * 60_000);
    await inTree(tmp, ['apt-get', 'install', '-y', '--no-install-recommends', '-o', 'Dpkg::Use-Pty=0', ...NM_PACKAGES], 15 * 60_000);
    await inTree(tmp, ['apt-get', 'clean'], 60_000);
    await run('rm', ['-rf', '--one-file-system', '--', join(tmp, 'var', 'lib', 'apt', 'lists'), policy]);
    mkdirSync(join(tmp, 'var', 'lib', 'apt', 'lists', 'partial'), { recursive: true });
    writeFileSync(join(tmp, 'etc', 'NetworkManager', 'NetworkManager.conf'), NM_LAB_CONF);
    const dropIn = join(tmp, 'usr', 'lib', 'systemd', 'system', 'NetworkManager.service.d');
    mkdirSync(dropIn, { recursive: true });
    writeFileSync(join(dropIn, '30-qubes-lab.conf'), NM_UNIT_DROPIN);
    // A template has no resolver of the build host.
    writeFileSync(join(tmp, 'etc', 'resolv.conf'), '');
  }, { image: image.key, packages: [...NM_PACKAGES] });
  return { ...layer, debs: [...image.debs, ...NM_PACKAGES] };
}
