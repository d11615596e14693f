import fs from 'node:fs';
import {Writable} from 'node:stream';
import tty from 'node:tty';
import winston from 'winston';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = typeof LOG_LEVELS[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = typeof LOG_FORMATS[number];

export type Logger = winston.Logger;

export type LogOptions = {
  level?: LogLevel;
  format?: LogFormat;
  logfile?: string;
  /** Where logs go without --logfile (tests pass their own). Defaults to stderr. */
  stream?: NodeJS.WritableStream;
};

/** Most log bytes held while the target does not take them; beyond it the oldest lines go. */
const QUEUE_MAX_BYTES = 1 << 20;
const WRITE_CHUNK_BYTES = 64 * 1024;

/**
 * Log output that never blocks the event loop and never grows without bound.
 * Lines queue in memory and go out through one asynchronous write at a time
 * (a libuv pool thread): a journald that stops reading stderr, or a log file
 * on a disk that hangs, stalls that thread, not the monitor. When the queue
 * is full the oldest lines are dropped, and how many is logged once the
 * target takes writes again.
 */
export class LogSink extends Writable {
  private fd: number | null;
  private queue: Array<Buffer> = [];
  private queuedBytes = 0;
  private writing = false;
  private dropped = 0;
  private drained: Array<() => void> = [];

  constructor(private readonly target: {fd: number} | {path: string}, private readonly notice: (dropped: number) => string, private readonly maxBytes = QUEUE_MAX_BYTES) {
    super();
    // Opening happens at start-up, before anything can hang.
    this.fd = 'fd' in target ? target.fd : fs.openSync(target.path, 'a', 0o640);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.push_(chunk);
    callback();
  }

  private push_(chunk: Buffer): void {
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    while (this.queuedBytes > this.maxBytes && this.queue.length > 1) {
      // The head may be half written: keep it, drop the next oldest.
      const [victim] = this.queue.splice(this.writing ? 1 : 0, 1);
      this.queuedBytes -= victim!.length;
      this.dropped += 1;
    }
    this.flush();
  }

  private flush(): void {
    if (this.writing || this.fd === null)
      return;
    if (this.queue.length === 0) {
      const drained = this.drained;
      this.drained = [];
      for (const resolve of drained)
        resolve();
      return;
    }
    if (this.dropped > 0 && !this.writing) {
      const line = Buffer.from(`${this.notice(this.dropped)}\n`);
      this.dropped = 0;
      this.queue.unshift(line);
      this.queuedBytes += line.length;
    }
    let take = 0;
    let bytes = 0;
    while (take < this.queue.length && (take === 0 || bytes + this.queue[take]!.length <= WRITE_CHUNK_BYTES)) {
      bytes += this.queue[take]!.length;
      take += 1;
    }
    const buffer = take === 1 ? this.queue[0]! : Buffer.concat(this.queue.slice(0, take));
    this.writing = true;
    fs.write(this.fd, buffer, 0, buffer.length, null, (error, written) => {
      this.writing = false;
      if (error !== null) {
        // EAGAIN from a non-blocking stderr, or the target is gone: drop what could not go.
        written = error.code === 'EAGAIN' ? 0 : buffer.length;
      }
      let left = written;
      while (left > 0 && this.queue.length > 0) {
        const head = this.queue[0]!;
        if (head.length <= left) {
          this.queue.shift();
          this.queuedBytes -= head.length;
          left -= head.length;
        } else {
          this.queue[0] = head.subarray(left);
          this.queuedBytes -= left;
          left = 0;
        }
      }
      if (error?.code === 'EAGAIN')
        setTimeout(() => this.flush(), 50).unref();
      else
        this.flush();
    });
  }

  /** logrotate's `create`: lines from now on go to a new file of that name (opened off the loop). */
  reopen(): void {
    if (!('path' in this.target) || this.fd === null)
      return;
    const old = this.fd;
    // Held back until the new file is open, so they land in it.
    this.fd = null;
    fs.open(this.target.path, 'a', 0o640, (error, fd) => {
      this.fd = error === null ? fd : old;
      if (error === null)
        setTimeout(() => fs.close(old, () => {}), this.writing ? 5_000 : 0).unref();
      this.flush();
    });
  }

  /** Resolves once everything queued is written, or after `ms`. */
  drain(ms: number): Promise<void> {
    if (this.queue.length === 0 && !this.writing)
      return Promise.resolve();
    return new Promise(resolve => {
      this.drained.push(resolve);
      setTimeout(resolve, ms).unref();
    });
  }

  override _final(callback: (error?: Error | null) => void): void {
    void this.drain(500).then(() => callback());
  }
}

const textFormat = winston.format.printf(info => {
  const {level, message, timestamp, ...rest} = info;
  const fields = Object.entries(rest)
    .filter(([key]) => typeof key === 'string')
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  return `${String(timestamp)} ${level}: ${String(message)}${fields === '' ? '' : ` ${fields}`}`;
});

export type LogHandle = {
  logger: Logger;
  reopen: () => void;
  close: () => Promise<void>;
};

/** Logs never go to stdout: stdout carries command results only. */
export function createLogger(options: LogOptions = {}): LogHandle {
  // Not process.stderr itself: for a pipe it writes synchronously, and blocks the loop when nobody reads.
  const toStderr = options.stream === undefined || options.stream === process.stderr;
  const isTty = options.logfile === undefined && (toStderr ? tty.isatty(2) : (options.stream as {isTTY?: boolean}).isTTY === true);
  const format = options.format ?? (isTty ? 'text' : 'json');

  const formats = [winston.format.timestamp()];
  if (format === 'json')
    formats.push(winston.format.json());
  else
    formats.push(textFormat);

  const notice = (dropped: number) => {
    const message = `log output was blocked: ${dropped} line(s) dropped`;
    const timestamp = new Date().toISOString();
    return format === 'json' ? JSON.stringify({level: 'warn', message, timestamp}) : `${timestamp} warn: ${message}`;
  };
  // In-process tests pass a stream of their own.
  const sink = options.logfile !== undefined ? new LogSink({path: options.logfile}, notice)
    : toStderr ? new LogSink({fd: 2}, notice) : null;
  const transport = new winston.transports.Stream({stream: sink ?? options.stream!, eol: '\n'});

  const logger = winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.combine(...formats),
    transports: [transport],
    exitOnError: false,
  });

  return {
    logger,
    reopen: () => sink?.reopen(),
    close: () => new Promise<void>(resolve => {
      // A child's result can still arrive after this (an abandoned ss -K): it is not worth a crash.
      logger.on('error', () => {});
      logger.on('finish', () => {
        logger.silent = true;
        if (sink === null)
          resolve();
        else
          sink.end(() => resolve());
      });
      logger.end();
      setTimeout(resolve, 500).unref();
    }),
  };
}

/** Logs the first occurrence of a key, then at most one summary per interval. */
export class RateLimitedLog {
  private readonly last = new Map<string, {at: number, suppressed: number}>();

  constructor(private readonly logger: Logger, private readonly intervalMs: number, private readonly now: () => number = () => performance.now()) {
  }

  log(level: LogLevel, key: string, message: string, meta: Record<string, unknown> = {}): void {
    const now = this.now();
    const entry = this.last.get(key);
    if (entry !== undefined && now - entry.at < this.intervalMs) {
      entry.suppressed += 1;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.last.set(key, {at: now, suppressed: 0});
    this.logger.log(level, message, suppressed > 0 ? {...meta, suppressed} : meta);
  }

  /** Counts as a logged occurrence: the next reminder waits a whole interval. */
  mark(key: string): void {
    this.last.set(key, {at: this.now(), suppressed: 0});
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}
