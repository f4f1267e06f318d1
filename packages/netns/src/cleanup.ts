#!/usr/bin/env node
// CLI: `node packages/netns/dist/cleanup.js` removes the leftovers of dead sessions (see
// stale.ts); live sessions of running processes are never touched.
import { createLogger, requireRootOrExit } from '@qubes-net/common';
import { cleanupStale } from './stale.js';

requireRootOrExit('qubes-net netns cleanup');
const log = createLogger('netns-cleanup');
const removed = await cleanupStale({ log });
log.info({ removed: removed.length, sessions: removed }, 'cleanup done');
