// The one-shot paths' logger (qubes-net-guest apply/remove, CLIs): pino's JSON line shape
// (level number, time, pid, component, fields, msg) without pino, whose load alone costs more
// than a whole apply may take. Lines go to stdout; when stdout is the journal's stream
// (JOURNAL_STREAM names its device:inode, as systemd sets it) each line starts with the
// `<N>` syslog priority, so journald files it at the right level.
import { fstatSync } from 'node:fs';

export type LineLevel = 'debug' | 'info' | 'warn' | 'error';
type LevelName = LineLevel | 'silent';

/** What the agents' shared code needs from a logger; pino's Logger has this shape too. */
export interface LogLike {
  debug(fields: object, msg: string): void;
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
  child(fields: object): LogLike;
}

const NUMBER: Record<LevelName, number> = { debug: 20, info: 30, warn: 40, error: 50, silent: Infinity };
const SYSLOG: Record<LineLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/** Whether fd 1 is the stream JOURNAL_STREAM ("dev:inode") names. */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const js = env.JOURNAL_STREAM;
  if (!js || !/^\d+:\d+$/.test(js)) return false;
  try {
    const st = fstatSync(1);
    return `${st.dev}:${st.ino}` === js;
  } catch {
    return false;
  }
}

function levelFrom(value: string | undefined): LevelName | undefined {
  return value !== undefined && value in NUMBER ? (value as LevelName) : undefined;
}

export interface LineLoggerOptions {
  level?: LevelName;
  /** Where lines go (default: stdout, synchronously, so nothing is lost on process.exit). */
  write?: (line: string) => void;
  journal?: boolean;
}

class LineLogger implements LogLike {
  constructor(
    private readonly base: string,
    private readonly min: number,
    private readonly write: (line: string) => void,
    private readonly journal: boolean,
  ) {}

  private emit(level: LineLevel, fields: object, msg: string): void {
    if (NUMBER[level] < this.min) return;
    let body: string;
    try {
      body = JSON.stringify(fields, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Error ? v.message : v));
    } catch {
      body = '{"fieldsError":"unserialisable"}';
    }
    const extra = body === '{}' || body === undefined ? '' : ',' + body.slice(1, -1);
    const line = `{"level":${NUMBER[level]},"time":${Date.now()}${this.base}${extra},"msg":${JSON.stringify(msg)}}\n`;
    this.write(this.journal ? `<${SYSLOG[level]}>${line}` : line);
  }

  debug(fields: object, msg: string): void { this.emit('debug', fields, msg); }
  info(fields: object, msg: string): void { this.emit('info', fields, msg); }
  warn(fields: object, msg: string): void { this.emit('warn', fields, msg); }
  error(fields: object, msg: string): void { this.emit('error', fields, msg); }

  child(fields: object): LogLike {
    const body = JSON.stringify(fields);
    return new LineLogger(this.base + (body === '{}' ? '' : ',' + body.slice(1, -1)), this.min, this.write, this.journal);
  }
}

/** QUBES_NET_LOG_LEVEL (debug, info, warn, error, silent) wins over `opts.level`; default info. */
export function createLineLogger(component: string, opts: LineLoggerOptions = {}): LogLike {
  const level = levelFrom(process.env.QUBES_NET_LOG_LEVEL) ?? opts.level ?? 'info';
  const write = opts.write ?? ((line: string) => { try { process.stdout.write(line); } catch { /* stdout gone */ } });
  const base = `,"pid":${process.pid},"component":${JSON.stringify(component)}`;
  return new LineLogger(base, NUMBER[level], write, opts.journal ?? stdoutIsJournal());
}
