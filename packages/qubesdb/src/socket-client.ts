// A pure-JS QubesDB client over the daemon's local socket (node:net and our codec, no FFI):
// the one-shot paths (qubes-net-guest apply, the qdb CLI) start in a few milliseconds with it,
// where loading koffi and libqubesdb costs tens. It speaks the same wire protocol as
// libqubesdb; requests are pipelined (the daemon answers each connection's requests in order, so
// replies are matched first in, first out: apply's dozen reads cost one round trip), RESP_WATCH
// events possibly interleaved.
// Daemons keep the FFI client (it re-registers watches after a daemon restart; this one does
// not reconnect: a lost connection fails the pending and later calls).
//
// Everything the daemon sends is checked: a reply of an unexpected type or a malformed header
// ends the connection with an error rather than being guessed at.
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { QubesDBError, type QubesDB, type QubesDBWatch, type OpenOptions } from './api.js';
import { MessageParser, MessageType, encodeMessage, isValidKey, isValidPath, isValidValue } from './codec.js';

const DEFAULT_DIR = '/var/run/qubes';

interface Reply {
  type: number;
  path: string;
  data: Buffer;
}

/** One request in flight: collects replies until `done` says the answer is complete. */
interface Pending {
  op: string;
  path: string;
  replies: Reply[];
  done: (r: Reply) => boolean;
  resolve: (replies: Reply[]) => void;
  reject: (err: Error) => void;
}

function socketPaths(opts: OpenOptions): [string, string] {
  const dir = opts.runDir ?? (process.env.QUBESDB_RUN_DIR || DEFAULT_DIR);
  if (opts.name !== undefined && (!opts.name || opts.name.includes('/'))) throw new QubesDBError('open', opts.name, 22, `qubesdb open: bad domain name`);
  const base = opts.name !== undefined ? `qubesdb.${opts.name}` : 'qubesdb';
  return [join(dir, `${base}.sock`), join(dir, `${base}.ro.sock`)];
}

function connectTo(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

class EventQueue implements QubesDBWatch {
  private readonly items: string[] = [];
  private waiter: ((r: IteratorResult<string>) => void) | undefined;
  closed = false;
  constructor(private readonly onClose: () => Promise<void>) {}
  push(path: string): void {
    if (this.closed) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: path, done: false });
    } else {
      this.items.push(path);
    }
  }
  end(): void {
    this.closed = true;
    this.waiter?.({ value: undefined, done: true });
    this.waiter = undefined;
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.end();
    await this.onClose();
  }
  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: () => {
        if (this.items.length) return Promise.resolve({ value: this.items.shift()!, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiter = resolve));
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

export class SocketQubesDB implements QubesDB {
  private readonly parser = new MessageParser({ accept: 'responses', checkPaths: false });
  /** Requests sent and not yet fully answered, oldest first. */
  private readonly queue: Pending[] = [];
  private broken: Error | undefined;
  private readonly watches = new Set<EventQueue>();

  private constructor(private readonly sock: Socket, readonly readOnly: boolean) {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err) => this.fail(new QubesDBError('io', '', 32, `qubesdb connection failed: ${err.message}`)));
    sock.on('close', () => this.fail(new QubesDBError('io', '', 32, 'qubesdb daemon closed the connection')));
  }

  /** Connects to the read-write socket, else the read-only one (as qdb_open does). */
  static async open(opts: OpenOptions = {}): Promise<SocketQubesDB> {
    const [rw, ro] = socketPaths(opts);
    try {
      return new SocketQubesDB(await connectTo(rw), false);
    } catch (err) {
      try {
        return new SocketQubesDB(await connectTo(ro), true);
      } catch {
        const e = err as NodeJS.ErrnoException;
        throw new QubesDBError('open', rw, typeof e.errno === 'number' ? -e.errno : 111, `qubesdb not reachable at ${rw}: ${e.code ?? e.message}`);
      }
    }
  }

  private fail(err: Error): void {
    if (this.broken) return;
    this.broken = err;
    for (const p of this.queue.splice(0)) p.reject(err);
    for (const w of this.watches) w.end();
    this.sock.destroy();
  }

  private onData(chunk: Buffer): void {
    this.parser.feed(chunk);
    for (let item = this.parser.next(); item; item = this.parser.next()) {
      if (item.kind !== 'message') {
        this.fail(new QubesDBError('io', '', 71, `qubesdb sent a malformed message (${item.error})`));
        return;
      }
      if (item.type === MessageType.RespWatch) {
        for (const w of this.watches) w.push(item.path);
        continue;
      }
      const p = this.queue[0];
      if (!p) {
        this.fail(new QubesDBError('io', item.path, 71, 'qubesdb sent a reply nobody asked for'));
        return;
      }
      p.replies.push({ type: item.type, path: item.path, data: item.data });
      if (p.done(p.replies[p.replies.length - 1]!)) {
        this.queue.shift();
        p.resolve(p.replies);
      }
    }
  }

  private request(op: string, type: number, path: string, data: Buffer | undefined, done: (r: Reply) => boolean): Promise<Reply[]> {
    if (this.broken) return Promise.reject(this.broken);
    const msg = encodeMessage(type, path, data);
    return new Promise((resolve, reject) => {
      this.queue.push({ op, path, replies: [], done, resolve, reject });
      this.sock.write(msg);
    });
  }

  private static single(r: Reply): boolean {
    return r.type !== MessageType.RespMultiread && r.type !== MessageType.RespList;
  }

  private error(op: string, path: string, r: Reply): QubesDBError {
    const errno = r.type === MessageType.RespErrorNoent ? 2 : this.readOnly && r.type === MessageType.RespError ? 13 : 71;
    return new QubesDBError(op, path, errno, `qubesdb ${op} ${path} failed (reply type ${r.type})`);
  }

  /** The value's bytes (the qdb CLI prints values that are not UTF-8). */
  async readBytes(path: string): Promise<Buffer | undefined> {
    if (!isValidKey(path)) throw new QubesDBError('read', path.slice(0, 80), 22);
    const [r] = await this.request('read', MessageType.Read, path, undefined, SocketQubesDB.single);
    if (r!.type === MessageType.RespRead) return r!.data;
    if (r!.type === MessageType.RespErrorNoent) return undefined;
    throw this.error('read', path, r!);
  }

  async read(path: string): Promise<string | undefined> {
    return (await this.readBytes(path))?.toString('utf8');
  }

  async write(path: string, value: string): Promise<void> {
    await this.writeBytes(path, Buffer.from(value, 'utf8'));
  }

  async writeBytes(path: string, data: Buffer): Promise<void> {
    if (!isValidKey(path) || !isValidValue(data)) throw new QubesDBError('write', path.slice(0, 80), 22);
    const [r] = await this.request('write', MessageType.Write, path, data, SocketQubesDB.single);
    if (r!.type !== MessageType.RespOk) throw this.error('write', path, r!);
  }

  async rm(path: string): Promise<void> {
    if (!isValidPath(path) || !path.startsWith('/')) throw new QubesDBError('rm', path.slice(0, 80), 22);
    const [r] = await this.request('rm', MessageType.Rm, path, undefined, SocketQubesDB.single);
    if (r!.type !== MessageType.RespOk && r!.type !== MessageType.RespErrorNoent) throw this.error('rm', path, r!);
  }

  /** LIST / MULTIREAD: entries up to the empty-path terminator, sorted ascending. */
  private async stream(op: 'list' | 'multiread', prefix: string): Promise<Reply[]> {
    if (prefix !== '' && !isValidPath(prefix)) throw new QubesDBError(op, prefix.slice(0, 80), 22);
    const want = op === 'list' ? MessageType.RespList : MessageType.RespMultiread;
    const replies = await this.request(op, op === 'list' ? MessageType.List : MessageType.Multiread, prefix, undefined, (r) => r.type !== want || r.path === '');
    const last = replies[replies.length - 1]!;
    if (last.type !== want) throw this.error(op, prefix, last);
    return replies.slice(0, -1).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.stream('list', prefix)).map((r) => r.path);
  }

  async multiread(prefix: string): Promise<Map<string, string>> {
    return new Map((await this.stream('multiread', prefix)).map((r) => [r.path, r.data.toString('utf8')]));
  }

  async multireadBytes(prefix: string): Promise<Map<string, Buffer>> {
    return new Map((await this.stream('multiread', prefix)).map((r) => [r.path, r.data]));
  }

  watch(paths: readonly string[]): QubesDBWatch {
    const q: EventQueue = new EventQueue(async () => {
      this.watches.delete(q);
      for (const p of paths) await this.request('unwatch', MessageType.Unwatch, p, undefined, SocketQubesDB.single).catch(() => undefined);
    });
    this.watches.add(q);
    for (const p of paths) {
      if (!isValidPath(p) || !p.startsWith('/')) throw new QubesDBError('watch', p.slice(0, 80), 22);
      void this.request('watch', MessageType.Watch, p, undefined, SocketQubesDB.single).then((rs) => {
        if (rs[0]!.type !== MessageType.RespOk) q.end();
      }, () => q.end());
    }
    return q;
  }

  async close(): Promise<void> {
    if (this.broken) return;
    this.broken = new QubesDBError('close', '', 9, 'qubesdb connection closed');
    for (const w of this.watches) w.end();
    await new Promise<void>((resolve) => {
      this.sock.once('close', () => resolve());
      this.sock.end();
    });
  }
}

/** Opens QubesDB over its socket (same options as the FFI client's openQubesDB, minus library). */
export function openSocketQubesDB(opts: OpenOptions = {}): Promise<SocketQubesDB> {
  return SocketQubesDB.open(opts);
}
