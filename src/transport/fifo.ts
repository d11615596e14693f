import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import {StartupError, errnoCode} from '../errors';
import {runSync} from '../spawn';

export const DEFAULT_FIFO = '/run/ebsmon/ebsmon.fifo';

/**
 * Creates the FIFO (and its directory, 0700) if missing and checks that what is
 * there is a FIFO nobody else can write. Start-up only: uses synchronous calls.
 */
export function ensureFifo(fifoPath: string, {group}: {group?: number} = {}): void {
  const dir = path.dirname(fifoPath);
  fs.mkdirSync(dir, {recursive: true, mode: 0o700});

  let stat = lstatOrNull(fifoPath);
  if (stat === null) {
    const mode = group === undefined ? '0600' : '0620';
    const result = runSync(['mkfifo', '-m', mode, fifoPath]);
    if (result.code !== 0)
      throw new StartupError(`cannot create the FIFO ${fifoPath}: ${result.stderr.trim()}`);
    if (group !== undefined)
      fs.chownSync(fifoPath, process.getuid?.() ?? 0, group);
    stat = fs.lstatSync(fifoPath);
  }

  if (!stat.isFIFO())
    throw new StartupError(`${fifoPath} exists and is not a FIFO; remove it or choose another --fifo`);
  if ((stat.mode & 0o002) !== 0)
    throw new StartupError(`${fifoPath} is writable by others (mode ${(stat.mode & 0o777).toString(8)}); anyone could forge heartbeats: chmod o-w it`);
}

function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT')
      return null;
    throw error;
  }
}

export type FifoReader = {
  close: () => void;
};

/**
 * Reads the FIFO without a libuv pool thread. Opened O_RDWR so that the reader
 * itself counts as a writer: read() never returns EOF when the last reporter
 * closes (fifo(7)), and the open never blocks. net.Socket on a FIFO fd becomes
 * a uv_pipe driven by epoll; fs.createReadStream would pin a pool thread.
 */
export function openFifoReader(fifoPath: string, onData: (chunk: Buffer) => void): FifoReader {
  const fd = fs.openSync(fifoPath, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const socket = new net.Socket({fd, readable: true, writable: false});
  socket.on('data', onData);
  socket.on('error', () => {
    // A FIFO opened O_RDWR does not fail on read; nothing to do but keep the monitor up.
  });
  return {
    close: () => {
      socket.destroy();
    },
  };
}

export type SendResult =
  | {ok: true}
  | {ok: false, reason: 'no-reader' | 'no-fifo' | 'pipe-full' | 'reader-gone' | 'error', detail: string};

/**
 * Writes whole lines to the FIFO through an O_WRONLY|O_NONBLOCK descriptor.
 * writeSync on a non-blocking fd returns at once and keeps the FIFO off the
 * libuv pool; a line of at most PIPE_BUF bytes is written whole or not at all.
 */
export class FifoWriter {
  private fd: number | null = null;

  constructor(readonly fifoPath: string) {
  }

  send(line: Buffer): SendResult {
    if (this.fd === null) {
      try {
        this.fd = fs.openSync(this.fifoPath, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      } catch (error) {
        const code = errnoCode(error);
        if (code === 'ENXIO')
          return {ok: false, reason: 'no-reader', detail: `no monitor is reading ${this.fifoPath}`};
        if (code === 'ENOENT')
          return {ok: false, reason: 'no-fifo', detail: `${this.fifoPath} does not exist (is the monitor running?)`};
        return {ok: false, reason: 'error', detail: `cannot open ${this.fifoPath}: ${String(error)}`};
      }
    }

    try {
      fs.writeSync(this.fd, line);
      return {ok: true};
    } catch (error) {
      const code = errnoCode(error);
      if (code === 'EAGAIN')
        return {ok: false, reason: 'pipe-full', detail: `${this.fifoPath} is full; the monitor is not keeping up`};
      this.close();
      if (code === 'EPIPE')
        return {ok: false, reason: 'reader-gone', detail: `the monitor closed ${this.fifoPath}`};
      return {ok: false, reason: 'error', detail: `cannot write ${this.fifoPath}: ${String(error)}`};
    }
  }

  close(): void {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // Already closed: nothing was lost.
      }
      this.fd = null;
    }
  }
}
