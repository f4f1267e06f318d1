// veth pairs between qubes. Both ends are created directly inside their namespaces
// (`ip -n A link add X … peer name Y netns B`): nothing ever appears in the host namespace.
import { ipBatch, ipJson, parseMac, run } from '@qubes-net/common';
import { assertIfName } from './names.js';

export interface LinkOptions {
  aMac?: string;
  bMac?: string;
  /** Bring both ends up (default true; the agents under test may set them up again). */
  up?: boolean;
  /** MTU of both ends (default the kernel's, 1500): a small-MTU link such as PPPoE. */
  mtu?: number;
}

function checkedMac(mac: string | undefined): string | undefined {
  if (mac === undefined) return undefined;
  const ok = parseMac(mac.toLowerCase());
  if (!ok) throw new Error(`invalid MAC ${JSON.stringify(mac)}`);
  return ok;
}

export async function createVethPair(aNetns: string, aIf: string, bNetns: string, bIf: string, opts: LinkOptions = {}): Promise<void> {
  assertIfName(aIf);
  assertIfName(bIf);
  const aMac = checkedMac(opts.aMac);
  const bMac = checkedMac(opts.bMac);
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) throw new Error(`invalid MTU ${JSON.stringify(opts.mtu)}`);
  const mtu = opts.mtu !== undefined ? ['mtu', String(opts.mtu)] : [];
  const args = ['-n', aNetns, 'link', 'add', aIf, ...(aMac ? ['address', aMac] : []), ...mtu, 'type', 'veth', 'peer', 'name', bIf, ...(bMac ? ['address', bMac] : []), ...mtu, 'netns', bNetns];
  // Same namespace on both sides (a loop inside one qube) would need no 'netns'; allow it too.
  if (aNetns === bNetns) args.splice(args.length - 2, 2);
  await run('ip', args);
  if (opts.up ?? true) {
    await run('ip', ['-n', aNetns, 'link', 'set', aIf, 'up']);
    await run('ip', ['-n', bNetns, 'link', 'set', bIf, 'up']);
  }
}

/** Deletes a link (for a veth, both ends go). Tolerates absence. */
export async function deleteLink(netns: string, ifname: string): Promise<void> {
  assertIfName(ifname);
  const res = await run('ip', ['-n', netns, 'link', 'del', ifname], { allowFailure: true });
  if (res.exitCode !== 0 && !/Cannot find device|does not exist/i.test(res.stderr)) {
    throw new Error(`ip -n ${netns} link del ${ifname} failed: ${res.stderr.trim()}`);
  }
}

export async function linkExists(netns: string, ifname: string): Promise<boolean> {
  assertIfName(ifname);
  const res = await run('ip', ['-n', netns, 'link', 'show', 'dev', ifname], { allowFailure: true });
  return res.exitCode === 0;
}

/**
 * Deletes every device but lo in a namespace, in one batch, so that the veth peers in other
 * qubes disappear now rather than whenever the kernel gets round to freeing the namespace.
 */
export async function deleteAllLinks(netns: string): Promise<void> {
  let links: { ifname: string }[];
  try {
    links = await ipJson<{ ifname: string }[]>(['link', 'show'], { netns });
  } catch {
    return; // namespace already gone
  }
  const lines = links.filter((l) => l.ifname !== 'lo').map((l) => `link del dev ${l.ifname}`);
  await ipBatch(lines, { netns, force: true });
}
