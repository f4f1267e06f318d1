// One client connection: input buffering and parsing, output, flow control and disconnect.
// Flow control as upstream: requests are taken from a client only while its output is
// drained, so a client that does not read its replies stalls only itself. Output is bounded
// anyway (a client that watches busy keys but never reads is dropped past MAX_PENDING_OUTPUT,
// and the server sheds the oldest backlog when all clients together pass a global budget).
// The connection also keeps the times the server's sweep needs for the idle and
// partial-message timeouts (issue 13.4).
import type { Socket } from 'node:net';
import type { DaemonLogger as Logger } from './logging.js';
import { MessageParser } from '../codec.js';
import type { Peer, QubesDBCore } from './commands.js';

/** Output a client may leave unread before it is disconnected. */
export const MAX_PENDING_OUTPUT = 32 * 1024 * 1024;

/** What a connection tells the server about its output (for the global budget). */
export type OutputListener = (conn: ClientConnection, queuedBytes: number) => void;

const now = (): number => performance.now();

export class ClientConnection implements Peer {
  // Payloads are views into the received chunk: QubesDBCore.handle uses them at once (a WRITE
  // value becomes a string), so copying them first would only make garbage.
  private readonly parser = new MessageParser({ accept: 'requests', copyData: false });
  /** No more requests are taken (dropping, or gone). */
  private stopped = false;
  private waitingForDrain = false;
  /** When the client last sent bytes (or connected). */
  private lastInput = now();
  /** Since when an incomplete message sits in the input buffer; undefined when none. */
  private partialSince: number | undefined;
  /** Since when output has been waiting for the client to read it; undefined when none. */
  private outputSince: number | undefined;

  constructor(
    readonly id: number,
    readonly readOnly: boolean,
    private readonly socket: Socket,
    private readonly core: QubesDBCore,
    private readonly log: Logger,
    onClose: (conn: ClientConnection) => void,
    private readonly maxPendingOutput = MAX_PENDING_OUTPUT,
    private readonly onOutput?: OutputListener,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.stopped) return;
      this.lastInput = now();
      this.parser.feed(chunk);
      this.process();
    });
    socket.on('drain', () => {
      this.outputSince = undefined;
      if (!this.waitingForDrain) return;
      this.waitingForDrain = false;
      if (!this.stopped) socket.resume();
      this.process();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // EPIPE/ECONNRESET: the client went away; 'close' follows.
      this.log.debug({ client: id, err: err.code ?? err.message }, 'client socket error');
    });
    socket.on('close', () => {
      this.stopped = true;
      if (this.parser.midMessage) this.log.info({ client: id, buffered: this.parser.buffered }, 'client disconnected mid-message');
      core.disconnect(this);
      onClose(this);
    });
  }

  send(bytes: Buffer): void {
    // A client being dropped (ended) gets nothing more, not even watch events.
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(bytes);
    const pending = this.socket.writableLength;
    if (pending > 0) this.outputSince ??= now();
    if (pending > this.maxPendingOutput) {
      this.log.warn({ client: this.id, pending }, 'client does not read its replies: dropping it');
      this.stopped = true;
      this.socket.destroy();
      return;
    }
    this.onOutput?.(this, bytes.length);
  }

  /** Output queued for the client and not yet taken by the kernel. */
  get pendingOutput(): number {
    if (this.socket.destroyed) return 0;
    const n = this.socket.writableLength;
    if (n === 0) this.outputSince = undefined;
    return n;
  }

  /** Since when the client has left output unread (for shedding oldest first); undefined: none. */
  get pendingSince(): number | undefined {
    return this.pendingOutput > 0 ? this.outputSince : undefined;
  }

  /**
   * Idle: no watch registered (a subscriber waits for events, which is its job), nothing
   * half-sent, no reply waiting, and no input for `ms`.
   */
  idleFor(at: number, ms: number): boolean {
    return at - this.lastInput >= ms && !this.parser.midMessage && this.pendingOutput === 0 && this.core.watches.countOf(this) === 0;
  }

  /**
   * An incomplete message older than `ms`, watches or not. A client whose complete requests
   * wait because it does not read its replies is not counted: the output limits handle it.
   */
  partialFor(at: number, ms: number): boolean {
    return this.partialSince !== undefined && !this.waitingForDrain && at - this.partialSince >= ms;
  }

  /** Closes the connection at once, saying why (timeouts, shedding). */
  close(why: string, fields: Record<string, unknown> = {}): void {
    if (this.socket.destroyed) return;
    this.log.warn({ client: this.id, readOnly: this.readOnly, ...fields }, why);
    this.destroy();
  }

  /** Closes the connection at once (daemon shutdown). */
  destroy(): void {
    this.stopped = true;
    this.socket.destroy();
  }

  /** Handles buffered requests until input runs out or output backs up. */
  private process(): void {
    if (this.stopped || this.waitingForDrain) return;
    // Replies to a burst of pipelined requests leave in one writev.
    this.socket.cork();
    let handled = false;
    try {
      while (!this.stopped) {
        if (this.socket.writableNeedDrain) {
          this.waitingForDrain = true;
          this.socket.pause();
          break;
        }
        const item = this.parser.next();
        if (!item) break;
        handled = true;
        if (this.core.handle(this, item) === 'drop') this.drop();
      }
    } catch (err) {
      // A bug must not take the daemon (and every other client) down: drop this client only.
      this.log.error({ client: this.id, err }, 'internal error handling a request: dropping client');
      this.drop();
    } finally {
      this.socket.uncork();
    }
    // The clock of the partial-message timeout starts when an incomplete message is first
    // left over, and is not reset by more bytes of the same message (a byte per second
    // must not keep a slot forever); a completed message restarts it.
    if (!this.parser.midMessage || this.waitingForDrain) this.partialSince = undefined;
    else if (handled || this.partialSince === undefined) this.partialSince = now();
  }

  /** Stops reading, lets queued replies out, then closes. */
  private drop(): void {
    this.stopped = true;
    this.socket.pause();
    this.socket.end(() => this.socket.destroy());
  }
}
