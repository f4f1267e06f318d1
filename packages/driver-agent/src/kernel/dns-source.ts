// Where the real upstream DNS servers come from: systemd-resolved when it is in use (its
// DNS property over D-Bus with busctl, else the resolv.conf it maintains with the real
// servers), otherwise the resolv.conf file (path configurable). The file's directory is
// watched, because DHCP clients and NetworkManager replace resolv.conf by renaming a new
// file over it, which a watch on the file itself would miss.
import { readFile, realpath } from 'node:fs/promises';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { runProcess as run } from './process.js';
import { parseResolvConf, parseResolvedDns, MAX_RESOLV_CONF_BYTES } from '../model/dns.js';
import { InputError } from '../model/input-error.js';

export interface DnsServers {
  servers4: string[];
  servers6: string[];
  /** Which source the list came from (for logs and status). */
  source: string;
  errors: InputError[];
}

export interface DnsSourceOptions {
  resolvConf: string;
  /** 'auto': use systemd-resolved when it runs; 'off': never. */
  resolved: 'auto' | 'off';
  /** The directory resolved keeps its files in (configurable for tests). */
  resolvedRunDir?: string;
}

const STUB = new Set(['127.0.0.53', '127.0.0.54']);

async function readText(path: string): Promise<string> {
  const buf = await readFile(path);
  return buf.subarray(0, MAX_RESOLV_CONF_BYTES + 1).toString('latin1');
}

export class DnsSource {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DnsSourceOptions) {}

  private get resolvedDir(): string {
    return this.opts.resolvedRunDir ?? '/run/systemd/resolve';
  }

  async read(): Promise<DnsServers> {
    let text: string;
    try {
      text = await readText(this.opts.resolvConf);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { servers4: [], servers6: [], source: this.opts.resolvConf, errors: [new InputError('resolv.conf', this.opts.resolvConf, code ?? String(err), 'cannot read the file')] };
    }
    const conf = parseResolvConf(text, this.opts.resolvConf);
    const onlyStub = conf.servers4.length > 0 && conf.servers4.every((s) => STUB.has(s));
    if (this.opts.resolved === 'auto' && onlyStub && existsSync(this.resolvedDir)) {
      const viaResolved = await this.readResolved();
      if (viaResolved) return viaResolved;
    }
    return { servers4: conf.servers4, servers6: conf.servers6, source: this.opts.resolvConf, errors: conf.errors };
  }

  /** resolved's own list (D-Bus), else its resolv.conf of real servers; undefined if neither works. */
  private async readResolved(): Promise<DnsServers | undefined> {
    const res = await run('busctl', ['--json=short', 'get-property', 'org.freedesktop.resolve1', '/org/freedesktop/resolve1', 'org.freedesktop.resolve1.Manager', 'DNS'], { allowFailure: true, timeoutMs: 5000 }).catch(() => undefined);
    if (res && res.exitCode === 0) {
      const parsed = parseResolvedDns(res.stdout);
      return { servers4: parsed.servers4, servers6: parsed.servers6, source: 'systemd-resolved (D-Bus)', errors: parsed.errors };
    }
    const file = `${this.resolvedDir}/resolv.conf`;
    try {
      const conf = parseResolvConf(await readText(file), file);
      return { servers4: conf.servers4, servers6: conf.servers6, source: file, errors: conf.errors };
    } catch {
      return undefined;
    }
  }

  /** Calls `onChange` (debounced) whenever resolv.conf, its symlink target or resolved's files change. */
  async watch(onChange: () => void): Promise<void> {
    const dirs = new Map<string, Set<string>>();
    const add = (path: string) => {
      const d = dirname(path);
      if (!dirs.has(d)) dirs.set(d, new Set());
      dirs.get(d)!.add(basename(path));
    };
    add(this.opts.resolvConf);
    const target = await realpath(this.opts.resolvConf).catch(() => undefined);
    if (target && target !== this.opts.resolvConf) add(target);
    if (this.opts.resolved === 'auto' && existsSync(this.resolvedDir)) add(`${this.resolvedDir}/resolv.conf`);
    const fire = () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(onChange, 20);
    };
    for (const [dir, names] of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          if (!name || names.has(String(name))) fire();
        });
        w.on('error', () => fire());
        this.watchers.push(w);
      } catch {
        // The directory does not exist (yet); `dns-changed` and uplink events still re-learn.
      }
    }
  }

  close(): void {
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}
