import fs from 'node:fs';
import {Writable} from 'node:stream';
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

/** Appends to a file and can reopen it, so logrotate's `create` works on SIGHUP. */
class ReopenableFile extends Writable {
  private file: fs.WriteStream;

  constructor(private readonly path: string) {
    super();
    this.file = this.open();
  }

  private open(): fs.WriteStream {
    const file = fs.createWriteStream(this.path, {flags: 'a', mode: 0o640});
    file.on('error', () => {});
    return file;
  }

  reopen(): void {
    const old = this.file;
    this.file = this.open();
    old.end();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.file.write(chunk);
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.file.end(() => callback());
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
  const stream = options.stream ?? process.stderr;
  const isTty = options.logfile === undefined && (stream as {isTTY?: boolean}).isTTY === true;
  const format = options.format ?? (isTty ? 'text' : 'json');

  const formats = [winston.format.timestamp()];
  if (format === 'json')
    formats.push(winston.format.json());
  else
    formats.push(textFormat);

  const file = options.logfile === undefined ? null : new ReopenableFile(options.logfile);
  const transport = new winston.transports.Stream({stream: file ?? stream, eol: '\n'});

  const logger = winston.createLogger({
    level: options.level ?? 'info',
    format: winston.format.combine(...formats),
    transports: [transport],
    exitOnError: false,
  });

  return {
    logger,
    reopen: () => file?.reopen(),
    close: () => new Promise<void>(resolve => {
      logger.on('finish', () => {
        if (file === null)
          resolve();
        else
          file.end(() => resolve());
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
