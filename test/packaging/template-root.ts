// The packaging tests' Debian 13 template: the lab's cached debootstrap root (tlab's
// packages/lab/src/template/root.ts, not a second debootstrap), one copy-on-write instance per
// test, and commands run inside it with chroot in a fresh network namespace (nothing reaches
// the host's network, nft included) with /proc mounted for systemctl's offline mode.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { run } from '@qubes-net/common';
import type * as RootModule from '../../packages/lab/dist/template/root.js';
import { ROOT } from './unpacked.js';

export interface TemplateRoot {
  dir: string;
  /** Runs ARGV inside the root; returns exit code and output (never throws on a non-zero exit). */
  exec(argv: string[], env?: Record<string, string>): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** Same, failing with the command's output when it exits non-zero. */
  must(argv: string[], env?: Record<string, string>): Promise<string>;
  remove(): Promise<void>;
}

export async function templateRoot(label: string): Promise<TemplateRoot> {
  // Loaded from the built lab package by path: the template module is not part of its exports.
  const mod = (await import(join(ROOT, 'packages/lab/dist/template/root.js'))) as typeof RootModule;
  const base = await mod.ensureDebianRoot();
  const inst = await mod.instantiateRoot(base.dir, `pkg-${label}-${randomBytes(3).toString('hex')}`);
  const exec: TemplateRoot['exec'] = async (argv, env = {}) => {
    const envArgs = Object.entries({ PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive', ...env }).map(([k, v]) => `${k}=${v}`);
    const r = await run('unshare', ['--net', '--mount', '--pid', '--fork', `--mount-proc=${join(inst.dir, 'proc')}`, 'chroot', inst.dir, 'env', '-i', ...envArgs, ...argv], { allowFailure: true, timeoutMs: 300_000 });
    return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    dir: inst.dir,
    exec,
    async must(argv, env) {
      const r = await exec(argv, env);
      if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${r.exitCode} in the template root:\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}`);
      return r.stdout;
    },
    remove: () => inst.remove(),
  };
}
