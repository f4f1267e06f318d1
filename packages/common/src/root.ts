// Helpers for commands that need root (namespaces, nft, ip): a clear message instead of EPERM.
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function requireRootOrExit(what: string): void {
  if (!isRoot()) {
    process.stderr.write(`${what} needs root (it creates network namespaces and programs nftables); run it with sudo.\n`);
    process.exit(77);
  }
}
