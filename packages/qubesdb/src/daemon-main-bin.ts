#!/usr/bin/env node
// Runs the daemon alone (`node daemon-main-bin.js [options]`), without the CLI's other commands:
// what tests spawn, and usable before/without cli.ts.
import { runDaemonCli } from './daemon-main.js';

process.exit(await runDaemonCli(process.argv.slice(2)));
