// Where things live on the host, and how a path inside a qube maps to a host path.
import { fileURLToPath } from 'node:url';
import { dirname, join, posix } from 'node:path';

/** Parent of every session's directory; the only host directory this package creates besides the mount points /rw and /etc/qubes. */
export const RUN_DIR = '/run/qubes-net-ns';

/** packages/netns/bin: fake xenstore tools and the qn-* probes; prepended to PATH inside qubes. */
export const BIN_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin');

/** Where `ip netns add` keeps its namespace files. */
export const NETNS_RUN_DIR = '/run/netns';

/** Host-side layout of one qube's root directory. */
export const QUBE_LAYOUT = {
  run: 'run',
  rw: 'rw',
  etcQubes: 'etc-qubes',
  resolvConf: 'resolv.conf',
} as const;

/** The fake xenstore's directory inside a qube. */
export const XENSTORE_DIR = '/run/qubes-net-xenstore';

/**
 * Maps an absolute path inside a qube to the host path of the same file, for the parts of the
 * qube's filesystem that are private to it. Pure; throws for paths outside those parts.
 */
export function mapQubePath(root: string, pathInQube: string): string {
  if (typeof pathInQube !== 'string' || !pathInQube.startsWith('/')) {
    throw new Error(`qube path must be absolute: ${JSON.stringify(pathInQube)}`);
  }
  if (pathInQube.split('/').includes('..')) throw new Error(`qube path must not contain '..': ${JSON.stringify(pathInQube)}`);
  const p = posix.normalize(pathInQube).replace(/(.)\/+$/, '$1');
  if (p === '/etc/resolv.conf') return join(root, QUBE_LAYOUT.resolvConf);
  const prefixes: [string, string][] = [
    ['/var/run', QUBE_LAYOUT.run], // /var/run is a symlink to /run on the host; same directory in the qube
    ['/run', QUBE_LAYOUT.run],
    ['/rw', QUBE_LAYOUT.rw],
    ['/etc/qubes', QUBE_LAYOUT.etcQubes],
  ];
  for (const [prefix, dir] of prefixes) {
    if (p === prefix) return join(root, dir);
    if (p.startsWith(prefix + '/')) return join(root, dir, p.slice(prefix.length + 1));
  }
  throw new Error(`${pathInQube} is not private to the qube (only /run, /var/run, /rw, /etc/qubes, /etc/resolv.conf are)`);
}
