import {MAX_LINE_BYTES, PROTOCOL_VERSION, messageValidators} from './schema';
import type {Message, MessageKind} from './schema';

export class MessageTooLargeError extends Error {
  override name = 'MessageTooLargeError' as const;
}

/** One NDJSON line, refused when it could not be written atomically to a FIFO. */
export function encodeMessage(message: Message): Buffer {
  const line = Buffer.from(`${JSON.stringify(message)}\n`);
  if (line.length > MAX_LINE_BYTES)
    throw new MessageTooLargeError(`a ${message.kind} message of ${line.length} bytes exceeds ${MAX_LINE_BYTES} bytes (PIPE_BUF)`);
  return line;
}

export const REJECT_REASONS = ['oversize', 'malformed', 'version', 'kind', 'name', 'ports', 'invalid', 'partial'] as const;
export type RejectReason = typeof REJECT_REASONS[number];

export type Rejection = {
  reason: RejectReason;
  detail: string;
};

export type DecodeResult =
  | {ok: true, message: Message}
  | {ok: false, rejection: Rejection};

const NEWLINE = 0x0a;

function classify(errors: Array<string>): RejectReason {
  const first = errors[0] ?? '';
  // The reporter's own name (".#1.name" inside a oneOf), not a nested one such as a device's.
  if (/^\.(#\d+\.)?name:/.test(first))
    return 'name';
  if (first.includes('.ports'))
    return 'ports';
  return 'invalid';
}

/** Decodes one line (without its newline). Never throws. */
export function decodeLine(line: Buffer | string): DecodeResult {
  const text = typeof line === 'string' ? line : line.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return {ok: false, rejection: {reason: 'malformed', detail: 'not JSON'}};
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return {ok: false, rejection: {reason: 'malformed', detail: 'not a JSON object'}};

  const record = value as Record<string, unknown>;
  if (record.v !== PROTOCOL_VERSION)
    return {ok: false, rejection: {reason: 'version', detail: `unknown version ${JSON.stringify(record.v)?.slice(0, 20)}`}};

  const kind = record.kind;
  if (typeof kind !== 'string' || !Object.prototype.hasOwnProperty.call(messageValidators, kind))
    return {ok: false, rejection: {reason: 'kind', detail: `unknown kind ${JSON.stringify(kind)?.slice(0, 40)}`}};

  const validator = messageValidators[kind as MessageKind];
  // The common case checks without collecting errors; only a rejected line pays for the details.
  if (!validator(value)) {
    const errors: Array<string> = [];
    validator(value, {errors});
    return {ok: false, rejection: {reason: classify(errors), detail: errors.join('; ').slice(0, 200)}};
  }

  return {ok: true, message: value as Message};
}

export type DecoderCounters = Record<RejectReason, number> & {accepted: number};

export type DecoderSink = {
  onMessage: (message: Message) => void;
  onReject: (rejection: Rejection) => void;
};

/**
 * Splits a byte stream into lines of at most MAX_LINE_BYTES and decodes them.
 * An overlong line is skipped up to its newline without being buffered whole.
 */
export class LineDecoder {
  readonly counters: DecoderCounters = {accepted: 0, oversize: 0, malformed: 0, version: 0, kind: 0, name: 0, ports: 0, invalid: 0, partial: 0};

  private pending: Array<Buffer> = [];
  private pendingBytes = 0;
  private skipping = false;

  constructor(private readonly sink: DecoderSink) {
  }

  push(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start);
      const end = newline === -1 ? chunk.length : newline;

      if (this.skipping) {
        if (newline !== -1)
          this.skipping = false;
      } else if (this.pendingBytes + (end - start) + 1 > MAX_LINE_BYTES) {
        this.pending = [];
        this.pendingBytes = 0;
        this.reject({reason: 'oversize', detail: `line longer than ${MAX_LINE_BYTES} bytes`});
        this.skipping = newline === -1;
      } else if (newline === -1) {
        this.pending.push(chunk.subarray(start));
        this.pendingBytes += chunk.length - start;
      } else {
        const piece = chunk.subarray(start, end);
        const line = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece]);
        this.pending = [];
        this.pendingBytes = 0;
        this.handleLine(line);
      }

      if (newline === -1)
        break;
      start = newline + 1;
    }
  }

  /** End of input: a trailing line without its newline is incomplete, so it is dropped. */
  end(): void {
    if (this.pendingBytes > 0)
      this.reject({reason: 'partial', detail: `${this.pendingBytes} bytes without a newline`});
    this.pending = [];
    this.pendingBytes = 0;
    this.skipping = false;
  }

  private handleLine(line: Buffer): void {
    if (line.length === 0)
      return;
    const result = decodeLine(line);
    if (result.ok) {
      this.counters.accepted += 1;
      this.sink.onMessage(result.message);
    } else {
      this.reject(result.rejection);
    }
  }

  private reject(rejection: Rejection): void {
    this.counters[rejection.reason] += 1;
    this.sink.onReject(rejection);
  }
}
