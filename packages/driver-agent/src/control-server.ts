// The driver's control socket: a unix stream socket (root only) speaking JSON lines. The
// hotplug client sends one vif event and waits for its reply; the CLI asks for status,
// dns-changed and reconcile. The socket mechanism is common's JsonlServer; the driver's
// protocol (requests, replies, their logs) is here.
import type { Logger } from '@qubes-net/common';
import { forLog } from '@qubes-net/common';
import { JsonlServer } from '@qubes-net/common/jsonl-server';
import { parseRequest, formatReply, MAX_REQUEST_BYTES, type Request } from './protocol.js';

export type Handler = (req: Request) => Promise<{ ok: boolean } & Record<string, unknown>>;

export class ControlServer {
  private readonly server: JsonlServer;

  constructor(path: string, private readonly handler: Handler, private readonly log: Logger) {
    this.server = new JsonlServer(path, {
      owner: 'driver daemon',
      log,
      maxRequestBytes: MAX_REQUEST_BYTES,
      answer: (line) => this.answer(line),
      tooLong: (partial) => {
        this.log.error({ source: 'control-socket', value: forLog(partial) }, 'request too long');
        return formatReply({ ok: false, code: 'request-too-long', message: 'request too long', details: {}, error: 'request too long' });
      },
    });
  }

  listen(): Promise<void> {
    return this.server.listen();
  }

  close(): Promise<void> {
    return this.server.close();
  }

  private async answer(line: string): Promise<string> {
    const parsed = parseRequest(line);
    let reply: { ok: boolean } & Record<string, unknown>;
    if (!parsed.ok) {
      this.log.error({ source: 'control-socket', value: forLog(line), reason: parsed.error }, 'bad control request');
      reply = { ok: false, code: 'bad-request', message: parsed.error, details: {}, error: parsed.error };
    } else {
      try {
        reply = await this.handler(parsed.request);
      } catch (err) {
        this.log.error({ op: parsed.request.op, err: String(err) }, 'control request failed');
        reply = { ok: false, code: 'internal-error', message: String(err), details: {}, error: String(err) };
      }
    }
    return formatReply(reply);
  }
}
