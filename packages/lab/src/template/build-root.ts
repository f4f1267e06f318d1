#!/usr/bin/env node
// Builds (or finds in the cache) the Debian 13 template root and prints its directory: for
// setup scripts and other test suites that want the tree without the lab.
import { requireRootOrExit } from '@qubes-net/common';
import { ensureDebianRoot } from './root.js';

requireRootOrExit('building the template root');
const started = Date.now();
const root = await ensureDebianRoot(undefined, (msg, fields) => process.stderr.write(`[template] ${msg} ${JSON.stringify(fields ?? {})}\n`));
process.stderr.write(`[template] ${root.built ? 'built' : 'cached'} in ${Date.now() - started} ms\n`);
process.stdout.write(`${root.dir}\n`);
