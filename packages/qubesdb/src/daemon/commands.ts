// What the daemon does with each request: the database and the watches, and the replies in
// upstream's order and framing. No sockets here: a Peer is anything that can take bytes, so
// this is testable on its own; connection.ts does the I/O.
import { shorten as forLog, type DaemonLogger as Logger } from './logging.js';
import { HEADER_SIZE, MessageType, encodeMessage, messageTypeName, writeHeader, type ParsedItem } from '../codec.js';
import { SortedStore } from './store.js';
import { WatchRegistry } from './watches.js';

export interface Peer {
  /** For logs. */
  readonly id: number;
  /** Connected through the read-only socket: WRITE and RM are refused. */
  readonly readOnly: boolean;
  /** Queues bytes for the client (never blocks). */
  send(bytes: Buffer): void;
}

/** After a request: keep reading from the client, or flush its output and disconnect it. */
export type Verdict = 'keep' | 'drop';

const NUL = 0;

/** Watch registrations one client may hold (issue 13.4: one client with 200,000 watches starved all others). */
export const MAX_WATCHES_PER_CLIENT = 4096;

/**
 * Registrations all read-only clients together may hold: each costs the daemon memory
 * (~250 bytes with a long path; 256 clients at the per-client cap came to 270 MB).
 * Read-write clients (dom0, agents) only have the per-client cap, so read-only ones cannot
 * use up what the agents need.
 */
export const MAX_READ_ONLY_WATCHES = 65536;

export interface CoreOptions {
  /** Registrations per client; past it WATCH is refused with RESP_ERROR (the client is kept). */
  maxWatchesPerClient?: number;
  /** Registrations over all read-only clients; past it their WATCH is refused the same way. */
  maxReadOnlyWatches?: number;
}

export class QubesDBCore {
  readonly store = new SortedStore();
  readonly watches = new WatchRegistry<Peer>();
  /** Clients already logged as hitting the watch cap. */
  private readonly capLogged = new WeakSet<Peer>();

  private readonly maxWatchesPerClient: number;
  private readonly maxReadOnlyWatches: number;
  private readOnlyWatches = 0;

  constructor(
    private readonly log: Logger,
    opts: CoreOptions = {},
  ) {
    this.maxWatchesPerClient = opts.maxWatchesPerClient ?? MAX_WATCHES_PER_CLIENT;
    this.maxReadOnlyWatches = opts.maxReadOnlyWatches ?? MAX_READ_ONLY_WATCHES;
  }

  handle(peer: Peer, item: ParsedItem): Verdict {
    if (item.kind === 'invalid') {
      // Upstream's recovery: the payload was skipped by the parser; answer RESP_ERROR, keep the client.
      this.log.warn({ client: peer.id, error: item.error, type: item.type, path: forLog(item.pathBytes.toString('latin1')), dataLen: item.dataLen }, 'invalid header');
      peer.send(encodeMessage(MessageType.RespError, item.pathBytes));
      return 'keep';
    }
    const { type, path, data } = item;
    switch (type) {
      case MessageType.Read:
        return this.read(peer, path, data);
      case MessageType.Write:
        return this.write(peer, path, data);
      case MessageType.Multiread:
        return this.multiread(peer, path, data);
      case MessageType.List:
        return this.list(peer, path, data);
      case MessageType.Rm:
        return this.rm(peer, path, data);
      case MessageType.Watch:
      case MessageType.Unwatch:
        return this.watch(peer, type, path, data);
      default:
        // The parser only lets request types through; kept for safety.
        this.reject(peer, type, path, 'unexpected message type');
        return 'keep';
    }
  }

  /** A client went away: its watches go with it. */
  disconnect(peer: Peer): void {
    if (peer.readOnly) this.readOnlyWatches -= this.watches.countOf(peer);
    this.watches.removeClient(peer);
    this.capLogged.delete(peer);
  }

  private reject(peer: Peer, type: number, path: string, why: string): void {
    this.log.warn({ client: peer.id, type: messageTypeName(type), path: forLog(path) }, why);
    peer.send(encodeMessage(MessageType.RespError, path));
  }

  private read(peer: Peer, path: string, data: Buffer): Verdict {
    if (data.length > 0) {
      // Upstream drops such a client without an answer.
      this.log.warn({ client: peer.id, path: forLog(path), dataLen: data.length }, 'READ with payload: dropping client');
      return 'drop';
    }
    const value = this.store.get(path);
    if (value === undefined) {
      peer.send(encodeMessage(MessageType.RespErrorNoent, path));
    } else {
      const out = Buffer.allocUnsafe(HEADER_SIZE + value.length);
      writeHeader(out, 0, MessageType.RespRead, path, value.length);
      out.write(value, HEADER_SIZE, 'latin1');
      peer.send(out);
    }
    return 'keep';
  }

  private write(peer: Peer, path: string, data: Buffer): Verdict {
    if (peer.readOnly) {
      this.reject(peer, MessageType.Write, path, 'WRITE on the read-only socket refused');
      return 'keep';
    }
    if (data.indexOf(NUL) !== -1) {
      this.reject(peer, MessageType.Write, path, 'value with a NUL byte refused');
      return 'keep';
    }
    if (path.length === 0 || path[0] !== '/' || path[path.length - 1] === '/') {
      // Upstream answers RESP_ERROR and then disconnects the client.
      this.reject(peer, MessageType.Write, path, 'WRITE to an invalid key: dropping client');
      return 'drop';
    }
    const value = data.toString('latin1');
    this.store.set(path, value);
    this.log.debug({ client: peer.id, key: path, value: forLog(value) }, 'write');
    peer.send(encodeMessage(MessageType.RespOk, path));
    // Watches fire after the writer's reply, and even when the value did not change.
    this.fire(path);
    return 'keep';
  }

  private rm(peer: Peer, path: string, data: Buffer): Verdict {
    if (data.length > 0) {
      this.reject(peer, MessageType.Rm, path, 'RM with payload refused');
      return 'keep';
    }
    if (peer.readOnly) {
      this.reject(peer, MessageType.Rm, path, 'RM on the read-only socket refused');
      return 'keep';
    }
    const removed = path.length === 0 ? 0 : path.endsWith('/') ? this.store.deletePrefix(path) : this.store.delete(path) ? 1 : 0;
    if (removed === 0) {
      peer.send(encodeMessage(MessageType.RespErrorNoent, path));
      return 'keep';
    }
    this.log.debug({ client: peer.id, key: path, removed }, 'rm');
    peer.send(encodeMessage(MessageType.RespOk, path));
    // Fired with the path as given: "X/" for a directory, which exact watches on children do not match.
    this.fire(path);
    return 'keep';
  }

  private multiread(peer: Peer, prefix: string, data: Buffer): Verdict {
    if (data.length > 0) {
      this.reject(peer, MessageType.Multiread, prefix, 'MULTIREAD with payload refused');
      return 'keep';
    }
    // One buffer for the whole reply stream: one write instead of one per entry.
    const paths: string[] = [];
    const values: string[] = [];
    let total = HEADER_SIZE; // the terminator
    const collect = (p: string, v: string): void => {
      paths.push(p);
      values.push(v);
      total += HEADER_SIZE + v.length;
    };
    // Empty prefix = full dump, descending (upstream's order for the VM's initial sync).
    if (prefix.length === 0) this.store.forEachDescending(collect);
    else this.store.forEachWithPrefix(prefix, collect);
    const out = Buffer.allocUnsafe(total);
    let off = 0;
    for (let i = 0; i < paths.length; i++) {
      const v = values[i]!;
      writeHeader(out, off, MessageType.RespMultiread, paths[i]!, v.length);
      out.write(v, off + HEADER_SIZE, 'latin1');
      off += HEADER_SIZE + v.length;
    }
    writeHeader(out, off, MessageType.RespMultiread, '', 0);
    peer.send(out);
    return 'keep';
  }

  private list(peer: Peer, prefix: string, data: Buffer): Verdict {
    if (data.length > 0) {
      this.reject(peer, MessageType.List, prefix, 'LIST with payload refused');
      return 'keep';
    }
    const paths: string[] = [];
    this.store.forEachWithPrefix(prefix, (p) => paths.push(p));
    const out = Buffer.allocUnsafe(HEADER_SIZE * (paths.length + 1));
    for (let i = 0; i < paths.length; i++) writeHeader(out, i * HEADER_SIZE, MessageType.RespList, paths[i]!, 0);
    writeHeader(out, paths.length * HEADER_SIZE, MessageType.RespList, '', 0);
    peer.send(out);
    return 'keep';
  }

  private watch(peer: Peer, type: number, path: string, data: Buffer): Verdict {
    if (data.length > 0) {
      // Upstream would leave the payload in the stream and misread it as the next header;
      // we skip it (the parser already did) and refuse, like RM/LIST/MULTIREAD.
      this.reject(peer, type, path, `${messageTypeName(type).toUpperCase()} with payload refused`);
      return 'keep';
    }
    if (type === MessageType.Watch) {
      const overClient = this.watches.countOf(peer) >= this.maxWatchesPerClient;
      if (overClient || (peer.readOnly && this.readOnlyWatches >= this.maxReadOnlyWatches)) {
        // RESP_ERROR is a reply every client already handles for WATCH; logged once per
        // client, not per refused request (a flood would flood the log too).
        if (!this.capLogged.has(peer)) {
          this.capLogged.add(peer);
          const max = overClient ? { maxPerClient: this.maxWatchesPerClient } : { maxReadOnly: this.maxReadOnlyWatches };
          this.log.warn({ client: peer.id, readOnly: peer.readOnly, ...max, path: forLog(path) }, 'watch limit reached: WATCH refused');
        }
        peer.send(encodeMessage(MessageType.RespError, path));
        return 'keep';
      }
      this.watches.add(path, peer);
      if (peer.readOnly) this.readOnlyWatches++;
      peer.send(encodeMessage(MessageType.RespOk, path));
    } else {
      const removed = this.watches.remove(path, peer);
      if (removed && peer.readOnly) this.readOnlyWatches--;
      peer.send(encodeMessage(removed ? MessageType.RespOk : MessageType.RespErrorNoent, path));
    }
    return 'keep';
  }

  /**
   * One RESP_WATCH per matching registration; the event bytes are shared by all receivers.
   * A client's events for one change are identical, so they leave in one write per client:
   * a client holding thousands of registrations of a key costs one buffer, not thousands of
   * socket writes, on every change of it (issue 13.4).
   */
  private fire(changed: string): void {
    let counts: Map<Peer, number> | undefined;
    this.watches.forEachMatch(changed, (peer) => {
      counts ??= new Map();
      counts.set(peer, (counts.get(peer) ?? 0) + 1);
    });
    if (!counts) return;
    const event = encodeMessage(MessageType.RespWatch, changed);
    for (const [peer, n] of counts) peer.send(n === 1 ? event : Buffer.alloc(n * event.length, event));
  }
}
