// The QubesDB wire format, as libqubesdb and qubesdb-daemon speak it on the local socket:
// a 72-byte header (type u8 at 0, NUL-terminated path char[64] at 1, padding, data_len u32
// little-endian at 68) followed by data_len payload bytes. Pure: no I/O, no state beyond the
// parser's buffer.

export const HEADER_SIZE = 72;
export const PATH_OFFSET = 1;
/** Size of the path field including its NUL (upstream QDB_MAX_PATH). */
export const PATH_FIELD_SIZE = 64;
export const DATA_LEN_OFFSET = 68;
/** Longest usable path: the 64-byte field keeps one byte for the NUL. */
export const MAX_PATH_LENGTH = PATH_FIELD_SIZE - 1;
/** Upstream QDB_MAX_DATA; the daemon rejects data_len >= this. */
export const QDB_MAX_DATA = 3072;
/** Largest value the daemon accepts (upstream's client/daemon off-by-one makes it 3071). */
export const MAX_VALUE_LENGTH = QDB_MAX_DATA - 1;

/** Message type codes, in upstream's enum order. */
export const MessageType = {
  Read: 0,
  Write: 1,
  Multiread: 2,
  List: 3,
  Rm: 4,
  Watch: 5,
  Unwatch: 6,
  RespOk: 7,
  RespErrorNoent: 8,
  RespError: 9,
  RespRead: 10,
  RespMultiread: 11,
  RespList: 12,
  RespWatch: 13,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

const typeNames: readonly string[] = Object.keys(MessageType);

/** "Read", "RespWatch"…, or "type-N" for a code outside the enum (for logs and test output). */
export function messageTypeName(type: number): string {
  return typeNames[type] ?? `type-${type}`;
}

/** Commands a client may send to the daemon on the local socket. */
export function isRequestType(type: number): boolean {
  return type >= MessageType.Read && type <= MessageType.Unwatch;
}

/** Messages the daemon sends to a client. */
export function isResponseType(type: number): boolean {
  return type >= MessageType.RespOk && type <= MessageType.RespWatch;
}

// Lookup table of the daemon's path character set: a-z A-Z 0-9 - _ / . : @
const pathChar = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c);
  pathChar[c] = /[a-zA-Z0-9\-_/.:@]/.test(ch) ? 1 : 0;
}
const DASH = 0x2d;

/** Whether these path bytes (no NUL) pass the daemon's check: allowed characters, '-' not first, ≤ 63 bytes. */
export function isValidPathBytes(bytes: Uint8Array, start = 0, end = bytes.length): boolean {
  if (end - start > MAX_PATH_LENGTH) return false;
  if (end > start && bytes[start] === DASH) return false;
  for (let i = start; i < end; i++) if (pathChar[bytes[i]!] === 0) return false;
  return true;
}

/**
 * Whether the daemon accepts this path in a header. The empty path is valid here (MULTIREAD
 * and LIST use it for "everything"); a leading '/' is a per-command rule (see isValidKey).
 */
export function isValidPath(path: string): boolean {
  if (path.length > MAX_PATH_LENGTH) return false;
  if (path.charCodeAt(0) === DASH) return false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c > 255 || pathChar[c] === 0) return false;
  }
  return true;
}

/** A path that can be stored: valid, starts with '/', does not end with '/'. */
export function isValidKey(path: string): boolean {
  return path.length > 0 && path[0] === '/' && path[path.length - 1] !== '/' && isValidPath(path);
}

/** Whether a value may be stored: at most MAX_VALUE_LENGTH bytes, no NUL. */
export function isValidValue(value: Uint8Array): boolean {
  return value.length <= MAX_VALUE_LENGTH && value.indexOf(0) === -1;
}

/**
 * Writes a header into `target` at `offset` (72 bytes: unused path bytes and padding zeroed).
 * `path` is written as bytes (latin1); it must be at most 63 bytes so the NUL fits.
 */
export function writeHeader(target: Buffer, offset: number, type: number, path: string | Uint8Array, dataLen: number): void {
  target[offset] = type;
  let n: number;
  if (typeof path === 'string') {
    if (path.length > MAX_PATH_LENGTH) throw new RangeError(`path longer than ${MAX_PATH_LENGTH} bytes`);
    n = target.write(path, offset + PATH_OFFSET, path.length, 'latin1');
  } else {
    if (path.length > MAX_PATH_LENGTH) throw new RangeError(`path longer than ${MAX_PATH_LENGTH} bytes`);
    target.set(path, offset + PATH_OFFSET);
    n = path.length;
  }
  target.fill(0, offset + PATH_OFFSET + n, offset + DATA_LEN_OFFSET);
  target.writeUInt32LE(dataLen >>> 0, offset + DATA_LEN_OFFSET);
}

/** One complete wire message: header plus payload. */
export function encodeMessage(type: number, path: string | Uint8Array, data?: Uint8Array): Buffer {
  const len = data?.length ?? 0;
  const buf = Buffer.allocUnsafe(HEADER_SIZE + len);
  writeHeader(buf, 0, type, path, len);
  if (len) buf.set(data!, HEADER_SIZE);
  return buf;
}

export interface DecodedHeader {
  type: number;
  /** Path bytes up to the first NUL, after forcing byte 63 to NUL as the daemon does. */
  pathBytes: Buffer;
  dataLen: number;
}

/** Reads a header at `offset` (needs 72 bytes). No validation. */
export function decodeHeader(buf: Buffer, offset = 0): DecodedHeader {
  const start = offset + PATH_OFFSET;
  let end = buf.indexOf(0, start);
  // Byte 63 of the path is treated as NUL whatever it holds.
  if (end === -1 || end > start + MAX_PATH_LENGTH) end = start + MAX_PATH_LENGTH;
  return { type: buf[offset]!, pathBytes: buf.subarray(start, end), dataLen: buf.readUInt32LE(offset + DATA_LEN_OFFSET) };
}

export type HeaderError = 'bad-type' | 'bad-path' | 'data-too-long';

/** What the parser yields: a well-formed message, or a rejected header whose payload was skipped. */
export type ParsedItem =
  | { kind: 'message'; type: number; path: string; data: Buffer }
  | { kind: 'invalid'; error: HeaderError; type: number; pathBytes: Buffer; dataLen: number };

export interface ParserOptions {
  /** Which message types are acceptable: client requests (the daemon's view), daemon responses, or both. */
  accept?: 'requests' | 'responses' | 'any';
  /**
   * Check path characters (default true: the daemon's rule). A client reading replies turns it
   * off, since upstream echoes a rejected request's path, whatever bytes it held, in RESP_ERROR.
   */
  checkPaths?: boolean;
  /**
   * Copy payloads out of the fed chunks (default true). Without copying, a message's data is
   * a view that stays valid only until the next feed(): for a consumer that uses it at once.
   */
  copyData?: boolean;
}

const EMPTY = Buffer.alloc(0);

/**
 * Incremental parser: feed() socket chunks, then call next() until it returns undefined.
 * A header the daemon must reject (type not acceptable, bad path characters, data_len ≥ 3072)
 * makes it skip data_len payload bytes as they arrive and then yield one 'invalid' item, which
 * is upstream's recovery (discard the payload, answer RESP_ERROR, keep the client).
 * Payloads of valid messages are copied out (unless copyData is false), so the parser never
 * pins a caller's chunk.
 */
export class MessageParser {
  private buf: Buffer = EMPTY;
  private pos = 0;
  /** A rejected header whose payload is still being skipped. */
  private skipping: { error: HeaderError; type: number; pathBytes: Buffer; dataLen: number; left: number } | undefined;
  private readonly accept: (type: number) => boolean;
  private readonly checkPaths: boolean;
  private readonly copyData: boolean;

  constructor(opts: ParserOptions = {}) {
    const a = opts.accept ?? 'requests';
    this.checkPaths = opts.checkPaths ?? true;
    this.copyData = opts.copyData ?? true;
    this.accept = a === 'requests' ? isRequestType : a === 'responses' ? isResponseType : (t) => isRequestType(t) || isResponseType(t);
  }

  /** Bytes received but not yet consumed (a partial message). */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  /** Whether a message is partially received (a client disconnecting now cut it). */
  get midMessage(): boolean {
    return this.buffered > 0 || this.skipping !== undefined;
  }

  feed(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.pos >= this.buf.length) {
      this.buf = chunk;
      this.pos = 0;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
      this.pos = 0;
    }
  }

  next(): ParsedItem | undefined {
    for (;;) {
      if (this.skipping) {
        const avail = this.buf.length - this.pos;
        const take = Math.min(avail, this.skipping.left);
        this.pos += take;
        this.skipping.left -= take;
        this.compact();
        if (this.skipping.left > 0) return undefined;
        const { error, type, pathBytes, dataLen } = this.skipping;
        this.skipping = undefined;
        return { kind: 'invalid', error, type, pathBytes, dataLen };
      }
      if (this.buf.length - this.pos < HEADER_SIZE) return undefined;
      const h = decodeHeader(this.buf, this.pos);
      const error: HeaderError | undefined = !this.accept(h.type)
        ? 'bad-type'
        : this.checkPaths && !isValidPathBytes(h.pathBytes)
          ? 'bad-path'
          : h.dataLen >= QDB_MAX_DATA
            ? 'data-too-long'
            : undefined;
      if (error) {
        this.pos += HEADER_SIZE;
        // Copy: the echoed path must not pin the chunk.
        this.skipping = { error, type: h.type, pathBytes: Buffer.from(h.pathBytes), dataLen: h.dataLen, left: h.dataLen };
        continue;
      }
      if (this.buf.length - this.pos < HEADER_SIZE + h.dataLen) return undefined;
      const path = h.pathBytes.toString('latin1');
      const dataStart = this.pos + HEADER_SIZE;
      const view = this.buf.subarray(dataStart, dataStart + h.dataLen);
      const data = h.dataLen === 0 ? EMPTY : this.copyData ? Buffer.from(view) : view;
      this.pos = dataStart + h.dataLen;
      this.compact();
      return { kind: 'message', type: h.type, path, data };
    }
  }

  private compact(): void {
    if (this.pos >= this.buf.length) {
      this.buf = EMPTY;
      this.pos = 0;
    }
  }
}
