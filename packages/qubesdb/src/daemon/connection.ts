// One client connection: input buffering and parsing, output, flow control and disconnect.
// Flow control as upstream: requests are taken from a client only while its output is
// drained, so a client that does not read its replies stalls only itself. Output is bounded
// anyway (a client that watches busy keys but never reads is dropped past MAX_PENDING_OUTPUT).
import type { Socket } from 'node:net';
import type { DaemonLogger as Logger } from './logging.js';
import { MessageParser } from '../codec.js';
import type { Peer, QubesDBCore } from './commands.js';

/** Output a client may leave unread before it is disconnected. */
export const MAX_PENDING_OUTPUT = 32 * 1024 * 1024;

export class ClientConnection implements Peer {
  // Payloads are views into the received chunk: QubesDBCore.handle uses them at once (a WRITE
  // value becomes a string), so copying them first would only make garbage.
  private readonly parser = new MessageParser({ accept: 'requests', copyData: false });
  /** No more requests are taken (dropping, or gone). */
  private stopped = false;
  private waitingForDrain = false;

  constructor(
    readonly id: number,
    readonly readOnly: boolean,
    private readonly socket: Socket,
    private readonly core: QubesDBCore,
    private readonly log: Logger,
    onClose: (conn: ClientConnection) => void,
    private readonly maxPendingOutput = MAX_PENDING_OUTPUT,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (this.stopped) return;
      this.parser.feed(chunk);
      this.process();
    });
    socket.on('drain', () => {
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
    if (this.socket.writableLength > this.maxPendingOutput) {
      this.log.warn({ client: this.id, pending: this.socket.writableLength }, 'client does not read its replies: dropping it');
      this.stopped = true;
      this.socket.destroy();
    }
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
    try {
      while (!this.stopped) {
        if (this.socket.writableNeedDrain) {
          this.waitingForDrain = true;
          this.socket.pause();
          break;
        }
        const item = this.parser.next();
        if (!item) break;
        if (this.core.handle(this, item) === 'drop') this.drop();
      }
    } catch (err) {
      // A bug must not take the daemon (and every other client) down: drop this client only.
      this.log.error({ client: this.id, err }, 'internal error handling a request: dropping client');
      this.drop();
    } finally {
      this.socket.uncork();
    }
  }

  /** Stops reading, lets queued replies out, then closes. */
  private drop(): void {
    this.stopped = true;
    this.socket.pause();
    this.socket.end(() => this.socket.destroy());
  }
}
