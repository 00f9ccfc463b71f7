/**
 * HTTP/1.1 requests as the gateway's own server reads them (RFC 9112): the
 * request line and header block, then the body by Content-Length or by the
 * chunked transfer coding.
 *
 * Strict wherever leniency would let two parsers disagree on where a request
 * ends (request smuggling through a proxy in front of the node): CRLF line
 * ends only, no folded header lines, no Content-Length next to
 * Transfer-Encoding, one Content-Length value, no transfer coding but chunked.
 */

/** A request the server cannot take: answered with `status`, then the connection closes. */
export class _HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** Limits of what one request may hold; the server's defaults are in http-server.ts. */
export interface _RequestLimits {
  /** Request line and headers, in bytes. */
  maxHeadBytes: number;
  /** Header lines. */
  maxHeaders: number;
  /** Body bytes, after chunked decoding. */
  maxBodyBytes: number;
}

/** No body: shared by every request without one (the handler must not write to it). */
const NO_BODY = new Uint8Array(0);
const EMPTY_INPUT = Buffer.alloc(0);
/** `bodyLength` of a chunked body, whose length is known only at its end. */
export const _CHUNKED = -1;

/**
 * One request, as the parser fills it in. A connection reads one request at a
 * time and refills the same object for the next, so that a request costs no
 * object of its own: one is valid until it has been answered, and must not be
 * kept beyond that. The parser fills it in (the connection adds the body) and
 * the connection empties it once answered.
 */
export class _HttpRequest {
  /** Decoded body; empty when the request has none. Set once the whole body has arrived. */
  body: Uint8Array = NO_BODY;
  method = "";
  /** Where the path (as sent, percent-encoded, without the query) lies: in `input`, or in a constant for "/" and "*". */
  private pathBytes: Buffer = EMPTY_INPUT;
  private pathFrom = 0;
  private pathTo = 0;
  /** The path as a string, once asked for. */
  private pathText: string | null = null;
  /** False when the path holds no percent sign, so that its parts need no decoding (true may also mean one in an absolute form's authority). */
  pathEscaped = false;
  /** Query string without the "?", "" when none. */
  query = "";
  /** The bytes the head was read from; never written to, so headers are decoded only when asked for. */
  private input: Buffer = EMPTY_INPUT;
  /** Where the header lines start in `input` (after the request line). */
  private headersStart = 0;
  /** Bytes of `input` up to the end of the head: where the body starts. */
  headLength = 0;
  /** Whether the connection may carry another request after this one. */
  keepAlive = true;
  /** Body bytes announced by Content-Length, 0 for none, `_CHUNKED` for chunked. */
  bodyLength = 0;
  /** The client waits for "100 Continue" before it sends the body. */
  expectsContinue = false;

  /**
   * Path as sent (percent-encoded), without the query. Made a string only
   * when asked for: the key routes read their parts from the bytes.
   */
  get path(): string {
    return (this.pathText ??= latin1(this.pathBytes, this.pathFrom, this.pathTo));
  }

  get pathLength(): number {
    return this.pathTo - this.pathFrom;
  }

  /** Whether the path starts with `prefix` (ASCII bytes). */
  pathStartsWith(prefix: Uint8Array): boolean {
    return this.pathTo - this.pathFrom >= prefix.length && bytesAt(this.pathBytes, this.pathFrom, prefix);
  }

  /**
   * Where `needle` (ASCII bytes) first occurs in the path at or after `from`,
   * -1 where it does not. A loop here rather than Buffer's `indexOf`: paths
   * are short, and the native call cost more than the search.
   */
  pathIndexOf(needle: Uint8Array, from: number): number {
    const bytes = this.pathBytes;
    const first = needle[0];
    const last = this.pathTo - needle.length;
    for (let at = this.pathFrom + from; at <= last; at++) {
      if (bytes[at] === first && bytesAt(bytes, at, needle)) return at - this.pathFrom;
    }
    return -1;
  }

  /** Whether the path's bytes from `from` to `to` (offsets in the path) are the first `to - from` bytes of `bytes`. */
  pathPartIs(from: number, to: number, bytes: Uint8Array): boolean {
    return to - from <= bytes.length && bytesAt(this.pathBytes, this.pathFrom + from, bytes, to - from);
  }

  /** Part of the path, `from` to `to` (offsets in the path), as a string of its own. */
  pathPart(from: number, to = this.pathLength): string {
    return latin1(this.pathBytes, this.pathFrom + from, this.pathFrom + to);
  }

  /**
   * @internal for connections, once the request is answered: lets go of its
   * bytes, so that an idle connection keeps no body or received chunk alive.
   */
  _release(): void {
    this._fill("", EMPTY_INPUT, 0, 0, false, "", EMPTY_INPUT, 0, 0, true, 0, false);
  }

  /** @internal for the parser: the fields of the head just read, the body emptied. */
  _fill(
    method: string,
    pathBytes: Buffer,
    pathFrom: number,
    pathTo: number,
    pathEscaped: boolean,
    query: string,
    input: Buffer,
    headersStart: number,
    headLength: number,
    keepAlive: boolean,
    bodyLength: number,
    expectsContinue: boolean,
  ): this {
    this.body = NO_BODY;
    this.method = method;
    this.pathBytes = pathBytes;
    this.pathText = null;
    this.pathFrom = pathFrom;
    this.pathTo = pathTo;
    this.pathEscaped = pathEscaped;
    this.query = query;
    this.input = input;
    this.headersStart = headersStart;
    this.headLength = headLength;
    this.keepAlive = keepAlive;
    this.bodyLength = bodyLength;
    this.expectsContinue = expectsContinue;
    return this;
  }

  /**
   * The first value of a header; `name` in lower case. The head is scanned
   * again rather than indexed while parsing: few requests ask for a header,
   * and every request would pay for the index.
   */
  header(name: string): string | null {
    const input = this.input;
    const headersEnd = this.headLength - 2;
    // Parsing checked every line: a token, a colon, a value without CR, CRLF.
    for (let at = this.headersStart; at < headersEnd; ) {
      const colon = input.indexOf(COLON, at);
      const lineEnd = input.indexOf(CR, colon);
      if (nameIs(input, at, colon, name)) {
        let from = colon + 1;
        while (input[from] === SP || input[from] === HTAB) from++;
        let to = lineEnd;
        while (to > from && (input[to - 1] === SP || input[to - 1] === HTAB)) to--;
        return latin1(input, from, to);
      }
      at = lineEnd + 2;
    }
    return null;
  }
}

/** Buffer's latin1Slice, which Node and Bun have but do not type: toString("latin1") without the encoding lookup. */
type Latin1Sliceable = Buffer & { latin1Slice(start: number, end: number): string };

function latin1(input: Buffer, from: number, to: number): string {
  return (input as Latin1Sliceable).latin1Slice(from, to);
}

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;
const QUESTION = 63;
const PERCENT = 37;
const SLASH = 47;
const HEAD_END = Buffer.from("\r\n\r\n", "latin1");
const HTTP_1 = Buffer.from("HTTP/1.", "latin1");
const CRLF = Buffer.from("\r\n", "latin1");
const ROOT_PATH = Buffer.from("/", "latin1");
const ASTERISK_PATH = Buffer.from("*", "latin1");

/**
 * Reads the request head at the start of `input`, after any empty lines a
 * client may send between requests (RFC 9112 §2.2; up to the head's limit in
 * bytes); null while the head is incomplete. `scanned`: how much of `input`
 * an earlier call already looked at for this same head (0 at first), so a
 * head that arrives in pieces is searched once, not again with every piece.
 * Throws `_HttpError` for what it refuses, also early for an incomplete head
 * that can never complete or grows too large (a bare-LF request would
 * otherwise sit until the idle timeout).
 * The head goes into `into` when given (a request already answered), else
 * into a new request.
 */
export function _readHead(input: Buffer, scanned: number, limits: _RequestLimits, into?: _HttpRequest): _HttpRequest | null {
  let start = 0;
  // Bounded, or a client sending nothing but empty lines would have them all kept (and searched again with every read).
  while (start + 1 < input.length && start <= limits.maxHeadBytes && input[start] === CR && input[start + 1] === LF) start += 2;
  if (start > limits.maxHeadBytes) throw new _HttpError(400, `more than ${limits.maxHeadBytes} bytes of empty lines before the request line`);
  // Most heads come whole as the whole of one read, which then ends in the blank
  // line: the parser finds where the head ends as it reads, with no search before.
  const length = input.length;
  if (scanned === 0 && length - 4 >= start && length - start <= limits.maxHeadBytes && endsInBlankLine(input, length)) {
    return parseHead(input, start, length, limits, into ?? new _HttpRequest());
  }
  // A blank line ending in the new bytes may have begun up to three bytes before them.
  const blankLine = input.indexOf(HEAD_END, Math.max(start, scanned - 3));
  if (blankLine >= 0) return parseHead(input, start, blankLine + 4, limits, into ?? new _HttpRequest());
  if (input.length - start > limits.maxHeadBytes) throw headTooLong(input, start, limits);
  for (let lf = input.indexOf(LF, Math.max(start, scanned)); lf >= 0; lf = input.indexOf(LF, lf + 1)) {
    if (lf === start || input[lf - 1] !== CR) throw new _HttpError(400, "line ends must be CRLF");
  }
  return null;
}

function endsInBlankLine(input: Buffer, length: number): boolean {
  return input[length - 1] === LF && input[length - 2] === CR && input[length - 3] === LF && input[length - 4] === CR;
}

function headTooLong(input: Buffer, from: number, limits: _RequestLimits): _HttpError {
  const lineEnd = input.indexOf(LF, from);
  if (lineEnd < 0 || lineEnd - from > limits.maxHeadBytes) return new _HttpError(414, `request line longer than ${limits.maxHeadBytes} bytes`);
  return new _HttpError(431, `request head longer than ${limits.maxHeadBytes} bytes`);
}

/**
 * Parses the head starting at `from`. `bound`: where a blank line is known to
 * end (the first one at or after `from` may end sooner, and ends the head).
 * Works on the bytes: only the query and the values asked for become strings
 * (the path too, when asked for).
 */
function parseHead(input: Buffer, from: number, bound: number, limits: _RequestLimits, into: _HttpRequest): _HttpRequest {
  // A bound beyond the limit comes only from a search for the blank line, and is then where the head ends.
  if (bound - from > limits.maxHeadBytes) throw headTooLong(input, from, limits);
  // Request line: METHOD SP TARGET SP HTTP/1.x CRLF
  let at = from;
  while (at < bound && isTokenByte(input[at]!)) at++;
  if (at === from || input[at] !== SP) throw new _HttpError(400, "malformed request line: expected METHOD TARGET HTTP/1.1");
  const method = methodName(input, from, at);
  const targetStart = ++at;
  let queryAt = -1;
  let percentAt = -1;
  for (; at < bound; at++) {
    const byte = input[at]!;
    if (byte === SP) break;
    if (byte < 0x21 || byte > 0x7e) {
      if (byte === CR || byte === LF) break;
      throw new _HttpError(400, "the request target may hold only visible ASCII; percent-encode other bytes");
    }
    if (byte === QUESTION) {
      if (queryAt < 0) queryAt = at;
    } else if (byte === PERCENT && percentAt < 0) percentAt = at;
  }
  if (at === targetStart || input[at] !== SP) throw new _HttpError(400, "malformed request line: expected METHOD TARGET HTTP/1.1");
  const targetEnd = at++;
  if (!bytesAt(input, at, HTTP_1) || input[at + 8] !== CR || input[at + 9] !== LF) throw badVersion(input, at, bound);
  const minor = input[at + 7];
  if (minor !== 0x31 && minor !== 0x30) throw badVersion(input, at, bound);
  const http10 = minor === 0x30;
  at += 10;

  const headersStart = at;
  let headerLines = 0;
  let contentLength = -1;
  let chunked = false;
  let close = http10;
  let expectsContinue = false;
  // Every line ends in CRLF (or is refused), so the first blank line is met at the start of a line.
  while (input[at] !== CR || input[at + 1] !== LF) {
    if (headerLines++ >= limits.maxHeaders) throw new _HttpError(431, `more than ${limits.maxHeaders} header lines`);
    const nameStart = at;
    while (at < bound && isTokenByte(input[at]!)) at++;
    if (at === nameStart || input[at] !== COLON) {
      const byte = input[at];
      const why = byte === SP || byte === HTAB ? "folded lines and spaces before the colon are not accepted" : "expected NAME: VALUE";
      throw new _HttpError(400, `malformed header line: ${why}`);
    }
    const nameEnd = at++;
    while (input[at] === SP || input[at] === HTAB) at++;
    const valueStart = at;
    let valueEnd = at;
    for (; ; at++) {
      const byte = input[at]!;
      if (byte === CR) break;
      if ((byte < 0x20 && byte !== HTAB) || byte === 0x7f) throw new _HttpError(400, "control character in a header value (line ends must be CRLF)");
      if (byte !== SP && byte !== HTAB) valueEnd = at + 1;
    }
    if (input[at + 1] !== LF) throw new _HttpError(400, "line ends must be CRLF");
    at += 2;
    switch (nameEnd - nameStart) {
      case 14:
        if (nameIs(input, nameStart, nameEnd, "content-length")) {
          const length = decimal(input, valueStart, valueEnd);
          if (contentLength >= 0 && contentLength !== length) throw new _HttpError(400, "conflicting content-length headers");
          contentLength = length;
        }
        break;
      case 17:
        if (nameIs(input, nameStart, nameEnd, "transfer-encoding")) {
          const value = latin1(input, valueStart, valueEnd);
          if (value.toLowerCase() !== "chunked") throw new _HttpError(501, `transfer coding ${JSON.stringify(value.slice(0, 40))} not supported; use chunked`);
          chunked = true;
        }
        break;
      case 10:
        if (nameIs(input, nameStart, nameEnd, "connection")) {
          const tokens = latin1(input, valueStart, valueEnd).toLowerCase();
          if (hasToken(tokens, "close")) close = true;
          else if (http10 && hasToken(tokens, "keep-alive")) close = false;
        }
        break;
      case 6:
        if (nameIs(input, nameStart, nameEnd, "expect")) {
          const value = latin1(input, valueStart, valueEnd);
          if (value.toLowerCase() !== "100-continue") throw new _HttpError(417, `expectation ${JSON.stringify(value.slice(0, 40))} not supported`);
          expectsContinue = true;
        }
        break;
    }
  }
  const end = at + 2;
  if (chunked && contentLength >= 0) throw new _HttpError(400, "content-length and transfer-encoding together");
  if (chunked && http10) throw new _HttpError(400, "transfer-encoding in an HTTP/1.0 request");
  const bodyLength = chunked ? _CHUNKED : Math.max(contentLength, 0);
  if (bodyLength > limits.maxBodyBytes) throw new _HttpError(413, `body of ${bodyLength} bytes exceeds the limit of ${limits.maxBodyBytes}`);
  const pathStart = originFormStart(input, targetStart, targetEnd);
  const pathEnd = queryAt < 0 ? targetEnd : Math.max(queryAt, pathStart);
  // "*", and an absolute form without a path (which means "/"), are read from constants.
  const constant = pathStart < 0 ? ROOT_PATH : pathStart === targetEnd ? ASTERISK_PATH : null;
  return into._fill(
    method,
    constant ?? input,
    constant === null ? pathStart : 0,
    constant === null ? pathEnd : constant.length,
    percentAt >= 0 && percentAt < pathEnd,
    queryAt < 0 ? "" : latin1(input, queryAt + 1, targetEnd),
    input,
    headersStart,
    end,
    !close,
    bodyLength,
    expectsContinue && bodyLength !== 0,
  );
}

function badVersion(input: Buffer, at: number, end: number): _HttpError {
  const lineEnd = input.indexOf(CR, at);
  const version = latin1(input, at, Math.min(lineEnd < 0 ? end : lineEnd, at + 20));
  if (/^HTTP\/\d\.\d$/.test(version)) return new _HttpError(505, `HTTP version ${version.slice(5)} not supported; use HTTP/1.1`);
  return new _HttpError(400, "malformed request line: expected METHOD TARGET HTTP/1.1");
}

const COMMON_METHODS = ["GET", "PUT", "HEAD", "DELETE"];

/** The common methods as constants: no string made per request. */
function methodName(input: Buffer, from: number, to: number): string {
  for (const method of COMMON_METHODS) if (bytesAre(input, from, to, method)) return method;
  return latin1(input, from, to);
}

/** Whether `input` holds the first `length` bytes of `bytes` at `at`. */
function bytesAt(input: Buffer, at: number, bytes: Uint8Array, length = bytes.length): boolean {
  for (let i = 0; i < length; i++) if (input[at + i] !== bytes[i]) return false;
  return true;
}

function bytesAre(input: Buffer, from: number, to: number, text: string): boolean {
  if (to - from !== text.length) return false;
  for (let i = 0; i < text.length; i++) if (input[from + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * Where the path starts within the target: the target itself in origin form
 * ("/path"); past the authority in absolute form ("http://host/path"), as
 * servers must accept; `to` for "*"; -1 for an absolute form without a path.
 */
function originFormStart(input: Buffer, from: number, to: number): number {
  if (input[from] === SLASH) return from;
  if (to - from === 1 && input[from] === 0x2a) return to;
  const target = latin1(input, from, to);
  const match = /^https?:\/\/[^/?]*/i.exec(target);
  if (match === null) throw new _HttpError(400, "malformed request target: expected a path such as /v1/ring");
  const pathAt = from + match[0].length;
  return input[pathAt] === SLASH ? pathAt : -1;
}

function decimal(input: Buffer, from: number, to: number): number {
  if (to === from || to - from > 15) throw malformedLength(input, from, to);
  let value = 0;
  for (let at = from; at < to; at++) {
    const digit = input[at]! - 0x30;
    if (digit < 0 || digit > 9) throw malformedLength(input, from, to);
    value = value * 10 + digit;
  }
  return value;
}

function malformedLength(input: Buffer, from: number, to: number): _HttpError {
  return new _HttpError(400, `malformed content-length ${JSON.stringify(latin1(input, from, Math.min(to, from + 40)))}`);
}

/** Whether `input[from, to)` is `name` (lower case), ignoring ASCII case. */
function nameIs(input: Buffer, from: number, to: number, name: string): boolean {
  if (to - from !== name.length) return false;
  for (let i = 0; i < name.length; i++) {
    const byte = input[from + i]!;
    if ((byte >= 0x41 && byte <= 0x5a ? byte + 32 : byte) !== name.charCodeAt(i)) return false;
  }
  return true;
}

/** RFC 9110 token characters. */
const TOKEN_BYTES = (() => {
  const table = new Uint8Array(256);
  for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") table[c.charCodeAt(0)] = 1;
  return table;
})();

function isTokenByte(byte: number): boolean {
  return TOKEN_BYTES[byte] === 1;
}

function hasToken(list: string, token: string): boolean {
  return list.split(",").some((item) => item.trim() === token);
}

/**
 * Decodes a chunked body as its bytes arrive. `feed` takes what has arrived
 * and returns how much of it was used; a chunk's size line or trailer line is
 * used only once whole, so the caller keeps the rest for the next call.
 */
export class _ChunkedBody {
  private readonly data: _ByteSink;
  private size = 0;
  /** Data bytes of the current chunk still to come; -1 while a size line is awaited. */
  private remaining = -1;
  /** Awaiting the CRLF after a chunk's data. */
  private dataEnd = false;
  private trailers = false;
  private trailerBytes = 0;
  done = false;

  constructor(private readonly maxBodyBytes: number) {
    this.data = new _ByteSink(maxBodyBytes);
  }

  feed(input: Buffer, from: number): number {
    let at = from;
    while (!this.done && at < input.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, input.length - at);
        this.data.append(input.subarray(at, at + take));
        this.remaining -= take;
        at += take;
        if (this.remaining === 0) this.dataEnd = true;
        continue;
      }
      const lineEnd = input.indexOf(CRLF, at);
      if (lineEnd < 0) {
        if (input.length - at > 1024) throw new _HttpError(400, "malformed chunked body: line longer than 1024 bytes");
        return at;
      }
      const line = latin1(input, at, lineEnd);
      at = lineEnd + 2;
      if (this.dataEnd) {
        if (line !== "") throw new _HttpError(400, "malformed chunked body: chunk data longer than its size");
        this.dataEnd = false;
        this.remaining = -1;
      } else if (this.trailers) {
        this.trailerBytes += line.length + 2;
        if (this.trailerBytes > 8192) throw new _HttpError(431, "chunked body trailers longer than 8192 bytes");
        if (line === "") this.done = true;
      } else {
        this.startChunk(line);
      }
    }
    return at;
  }

  private startChunk(line: string): void {
    const extensionAt = line.indexOf(";");
    const digits = extensionAt < 0 ? line : line.slice(0, extensionAt);
    if (!/^[0-9a-fA-F]{1,12}$/.test(digits)) throw new _HttpError(400, `malformed chunked body: bad chunk size ${JSON.stringify(digits.slice(0, 20))}`);
    const size = Number.parseInt(digits, 16);
    if (this.size + size > this.maxBodyBytes) throw new _HttpError(413, `body exceeds the limit of ${this.maxBodyBytes} bytes`);
    if (size === 0) {
      this.trailers = true;
      return;
    }
    this.size += size;
    this.remaining = size;
  }

  /** The whole body, once `done`, in an array of its own. */
  body(): Uint8Array {
    return this.data.bytes();
  }
}

/**
 * A body's bytes, appended as they arrive to one array that doubles as needed
 * (up to `limit`, which appends must not pass). One object however the body
 * is cut into reads or chunks (a client may send one byte at a time), and
 * memory that follows the bytes received rather than the size announced.
 */
export class _ByteSink {
  private data = NO_BODY;
  length = 0;

  constructor(private readonly limit: number) {}

  append(bytes: Uint8Array): void {
    const end = this.length + bytes.length;
    if (end > this.data.length) this.grow(end);
    this.data.set(bytes, this.length);
    this.length = end;
  }

  private grow(needed: number): void {
    const grown = new Uint8Array(Math.min(Math.max(needed, this.data.length * 2, SINK_FIRST_BYTES), this.limit));
    grown.set(this.data.subarray(0, this.length));
    this.data = grown;
  }

  /** The bytes in an array of their own, sized to them (no copy once the array has grown to the limit). */
  bytes(): Uint8Array {
    return this.data.length === this.length ? this.data : this.data.slice(0, this.length);
  }
}

/** A body sink's first array: most bodies over several reads are larger than one read. */
const SINK_FIRST_BYTES = 16 * 1024;
