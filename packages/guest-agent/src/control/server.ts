// The guest daemon's control socket: a unix stream socket, root only (0600), JSON lines. The
// udev-started `qubes-net-uplink` client sends one request and waits for the reply, so an uplink
// event costs a C process instead of a Node start while the daemon is up. The socket mechanism
// is common's JsonlServer; the guest's protocol (requests, replies, exit codes, logs) is here.
import { forLog } from '@qubes-net/common/addr';
import { JsonlServer, socketAnswers } from '@qubes-net/common/jsonl-server';
import type { Logger } from '@qubes-net/common/log';
import { formatReply, parseControlRequest, MAX_REQUEST_BYTES, type ControlRequest } from './protocol.js';
import { EXIT } from '../exit-codes.js';

export { socketAnswers };

/** The reply to send, or undefined to close without one (the client then runs the CLI itself). */
export type ControlHandler = (req: ControlRequest) => Promise<Record<string, unknown> | undefined>;

/** Connections served at once; the only client sends one request per uplink event. */
const MAX_CONNECTIONS = 32;
/** A connection that has not sent a whole request by then is dropped. */
const REQUEST_TIMEOUT_MS = 10_000;

export class ControlServer {
  private readonly server: JsonlServer;

  constructor(path: string, private readonly handler: ControlHandler, private readonly log: Logger) {
    this.server = new JsonlServer(path, {
      owner: 'guest daemon',
      log,
      maxRequestBytes: MAX_REQUEST_BYTES,
      maxConnections: MAX_CONNECTIONS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      answer: (line, client) => this.answer(line, client.gone),
      tooLong: (partial) => {
        this.log.error({ source: 'control-socket', value: forLog(partial), reason: `longer than ${MAX_REQUEST_BYTES} bytes` }, 'bad control request');
        return formatReply({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes`, exitCode: EXIT.usage });
      },
    });
  }

  /** Listens on the path, replacing a stale socket file; fails when another daemon answers there. */
  listen(): Promise<void> {
    return this.server.listen();
  }

  /** Stops listening, drops the connections still open and removes the socket file. */
  close(): Promise<void> {
    return this.server.close();
  }

  private async answer(line: string, gone: boolean): Promise<string | undefined> {
    // Gone (the client hung up, or an earlier reply closed the connection): nobody to answer.
    if (gone) return undefined;
    const parsed = parseControlRequest(line);
    let reply: Record<string, unknown> | undefined;
    if (!parsed.ok) {
      this.log.error({ source: 'control-socket', value: forLog(line), reason: parsed.error }, 'bad control request');
      reply = { ok: false, error: parsed.error, exitCode: EXIT.usage };
    } else {
      try {
        reply = await this.handler(parsed.request);
      } catch (err) {
        this.log.error({ source: 'control-socket', op: parsed.request.op, error: (err as Error).message }, 'control request failed');
        reply = { ok: false, error: (err as Error).message, exitCode: EXIT.kernel };
      }
    }
    return reply === undefined ? undefined : formatReply(reply);
  }
}
