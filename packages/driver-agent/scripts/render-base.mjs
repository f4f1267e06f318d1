#!/usr/bin/env node
// Renders the base ruleset files that packaging installs and the boot unit loads with
// `nft -f` (no Node at boot, issue 10.3): base-ipv4.nft and base-dual.nft (IPv6 kernel),
// and their -firewall variants with the firewall's skeleton (forward policy drop) in the same
// transaction, for qubes with the qubes-firewall service. Everything comes from the one
// renderer (renderBaseRuleset); DNS is unknown at build time, so dnat-dns starts empty and the
// agent fills it. Usage: render-base.mjs OUTDIR  (needs the build: npm run build).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderBaseFiles } from '../dist/base.js';

const out = process.argv[2];
if (!out || process.argv.length > 3 || out.startsWith('-')) {
  process.stderr.write('usage: render-base.mjs OUTDIR\n');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
for (const [name, text] of await renderBaseFiles()) {
  writeFileSync(join(out, name), text, { mode: 0o644 });
  process.stdout.write(`${join(out, name)}\n`);
}
