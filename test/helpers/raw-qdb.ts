// A raw QubesDB socket client for conformance tests: sends any bytes (valid or not) and reads
// the daemon's messages one by one, keeping RESP_WATCH events apart from replies the way
// libqubesdb does. Every wait has a generous deadline that only guards against hangs.
import { connect, type Socket } from 'node:net';
import { HEADER_SIZE, MessageParser, MessageType, PATH_FIELD_SIZE, DATA_LEN_OFFSET, encodeMessage, messageTypeName } from '@qubes-net/qubesdb';

export interface WireMessage {
  type: number;
  path: string;
  data: Buffer;
}

const GUARD_MS = 15_000;

/** A header built byte by byte: for headers our encoder refuses to make (long paths, no NUL…). */
export function rawHeader(type: number, pathBytes: Uint8Array | string, dataLen: number): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  buf[0] = type;
  const p = typeof pathBytes === 'string' ? Buffer.from(pathBytes, 'latin1') : pathBytes;
  buf.set(p.subarray(0, PATH_FIELD_SIZE), 1);
  buf.writeUInt32LE(dataLen >>> 0, DATA_LEN_OFFSET);
  return buf;
}

export class RawQdbClient {
  /** RESP_WATCH paths received, oldest first, not yet taken by nextEvent(). */
  readonly events: string[] = [];
  /** Every message received, in arrival order (replies and events interleaved). */
  readonly received: WireMessage[] = [];
  private readonly parser = new MessageParser({ accept: 'responses', checkPaths: false });
  private readonly replies: WireMessage[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  private error: Error | undefined;
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.parser.feed(chunk);
      for (let item = this.parser.next(); item; item = this.parser.next()) {
        if (item.kind === 'invalid') {
          this.error = new Error(`daemon sent an invalid header: ${item.error} type ${item.type}`);
          continue;
        }
        this.received.push({ type: item.type, path: item.path, data: item.data });
        if (item.type === MessageType.RespWatch) {
          this.events.push(item.path);
        } else {
          this.replies.push({ type: item.type, path: item.path, data: item.data });
        }
      }
      this.wake();
    });
    socket.on('error', (err) => {
      this.error ??= err;
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(path: string): Promise<RawQdbClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ path });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawQdbClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Whether the daemon closed the connection. */
  get isClosed(): boolean {
    return this.ended;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private async until<T>(what: string, take: () => T | undefined): Promise<T> {
    const deadline = Date.now() + GUARD_MS;
    for (;;) {
      const v = take();
      if (v !== undefined) return v;
      if (this.error) throw this.error;
      if (this.ended) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} from the daemon within ${GUARD_MS} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  send(type: number, path: string | Uint8Array, data?: Uint8Array | string): void {
    this.socket.write(encodeMessage(type, path, typeof data === 'string' ? Buffer.from(data, 'latin1') : data));
  }

  /** The next reply (anything but RESP_WATCH). */
  nextReply(): Promise<WireMessage> {
    return this.until('reply', () => this.replies.shift());
  }

  /** The next watch event path. */
  nextEvent(): Promise<string> {
    return this.until('watch event', () => this.events.shift());
  }

  /** Replies already received and not yet taken. */
  get pendingReplies(): number {
    return this.replies.length;
  }

  /** Resolves once the daemon closed the connection. */
  async waitClosed(): Promise<void> {
    // A reset (ECONNRESET) counts as closed too.
    let timer: NodeJS.Timeout | undefined;
    const guard = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`connection not closed within ${GUARD_MS} ms`)), GUARD_MS);
    });
    try {
      await Promise.race([this.closed, guard]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends a request and returns its reply, checking its type. */
  async request(type: number, path: string, data?: Uint8Array | string): Promise<WireMessage> {
    this.send(type, path, data);
    return this.nextReply();
  }

  async read(path: string): Promise<Buffer | undefined> {
    const r = await this.request(MessageType.Read, path);
    if (r.type === MessageType.RespErrorNoent) return undefined;
    expectType(r, MessageType.RespRead);
    return r.data;
  }

  async write(path: string, value: Uint8Array | string): Promise<WireMessage> {
    return this.request(MessageType.Write, path, value);
  }

  async rm(path: string): Promise<WireMessage> {
    return this.request(MessageType.Rm, path);
  }

  async watch(path: string): Promise<WireMessage> {
    return this.request(MessageType.Watch, path);
  }

  async unwatch(path: string): Promise<WireMessage> {
    return this.request(MessageType.Unwatch, path);
  }

  /** [path, value] pairs in the order the daemon sent them, up to the empty-path terminator. */
  async multiread(prefix: string): Promise<[string, string][]> {
    this.send(MessageType.Multiread, prefix);
    const out: [string, string][] = [];
    for (;;) {
      const r = await this.nextReply();
      expectType(r, MessageType.RespMultiread);
      if (r.path === '') {
        if (r.data.length) throw new Error('MULTIREAD terminator with data');
        return out;
      }
      out.push([r.path, r.data.toString('latin1')]);
    }
  }

  /** Paths in the order the daemon sent them, up to the empty-path terminator. */
  async list(prefix: string): Promise<string[]> {
    this.send(MessageType.List, prefix);
    const out: string[] = [];
    for (;;) {
      const r = await this.nextReply();
      expectType(r, MessageType.RespList);
      if (r.data.length) throw new Error('RESP_LIST with data');
      if (r.path === '') return out;
      out.push(r.path);
    }
  }

  close(): Promise<void> {
    this.socket.destroy();
    return this.closed;
  }

  /** Half-close: the daemon sees EOF after what was sent. */
  end(): void {
    this.socket.end();
  }
}

export function expectType(msg: WireMessage, type: number): void {
  if (msg.type !== type) throw new Error(`expected ${messageTypeName(type)}, got ${messageTypeName(msg.type)} for ${JSON.stringify(msg.path)}`);
}
