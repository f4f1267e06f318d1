#!/usr/bin/env node
// Builds (or finds in the cache) the Debian 13 template root and prints its directory: for
// setup scripts and other test suites that want the tree without the lab. With `--deb FILE`,
// the template image with that package (and the lab's stand-ins) installed instead.
import { requireRootOrExit } from '@qubes-net/common';
import { ensureDebianRoot } from './root.js';
import { ensureTemplateImage } from './image.js';

requireRootOrExit('building the template root');
const args = process.argv.slice(2);
const debAt = args.indexOf('--deb');
const deb = debAt >= 0 ? args[debAt + 1] : undefined;
if (debAt >= 0 && !deb) {
  process.stderr.write('usage: build-root [--deb FILE]\n');
  process.exit(2);
}
const log = (msg: string, fields?: Record<string, unknown>): void => { process.stderr.write(`[template] ${msg} ${JSON.stringify(fields ?? {})}\n`); };
const started = Date.now();
const root = deb ? await ensureTemplateImage({ deb, log }) : await ensureDebianRoot(undefined, log);
process.stderr.write(`[template] ${root.built ? 'built' : 'cached'} in ${Date.now() - started} ms\n`);
process.stdout.write(`${root.dir}\n`);
