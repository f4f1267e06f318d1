// What the booted-template tests share: the guard every test starts with, and the probes run
// inside a qube (the template's own node for HTTP, ping for ICMP).
import assert from 'node:assert/strict';
import { after, before, type TestContext } from 'node:test';
import { template } from '@qubes-net/lab';
import { isRoot, needRoot } from '../helpers/root.js';

type TemplateLab = template.TemplateLab;

/** The lab the file's `before` started, or undefined when not root; its set-up error fails the test. */
export function labReady(t: TestContext, lab: TemplateLab | undefined, setupError: unknown): TemplateLab | undefined {
  if (!needRoot(t)) return undefined;
  if (setupError) throw setupError;
  assert.ok(lab, 'the lab did not start');
  return lab;
}

export interface BootedLab {
  /** The lab for a test: undefined when not root (skipped with the reason); a set-up error fails it. */
  ready(t: TestContext): TemplateLab | undefined;
  /** After a test took the lab down itself: nothing left for `after` to do. */
  forget(): void;
}

/**
 * A file's booted lab: `before` creates it, then boots it (separately, so that a lab whose boot
 * fails is still known and `after` takes it down), and `after` takes it down.
 */
export function bootedLab(create: () => Promise<TemplateLab>, boot: (lab: TemplateLab) => Promise<void> = (l) => l.up()): BootedLab {
  let lab: TemplateLab | undefined;
  let setupError: unknown;
  before(async () => {
    if (!isRoot()) return;
    try {
      lab = await create();
      await boot(lab);
    } catch (err) {
      setupError = err;
    }
  }, { timeout: 15 * 60_000 });
  after(async () => {
    await lab?.down();
  });
  return {
    ready: (t) => labReady(t, lab, setupError),
    forget: () => { lab = undefined; },
  };
}

/** An HTTP GET with the template's own node (fetch), inside the qube: status or the error. */
export async function httpGet(l: TemplateLab, qube: string, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(4000) }).then(async (r) => console.log(r.status, (await r.text()).length), (e) => console.log('error', e.cause?.code ?? e.name))`;
  return (await l.exec(qube, ['node', '-e', script], { timeoutMs: 15_000 })).stdout.trim();
}

export async function ping(l: TemplateLab, qube: string, addr: string): Promise<boolean> {
  return (await l.exec(qube, ['ping', '-n', '-c', '1', '-W', '2', addr])).exitCode === 0;
}
