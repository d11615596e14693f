import fs from 'node:fs';

import {parseMountinfo} from './mountinfo';
import type {MountEntry} from './mountinfo';

export const MOUNTINFO = '/proc/self/mountinfo';

/**
 * The mount table, from procfs: the kernel's own list, read without touching
 * any disk, so a hung volume cannot stall the read.
 */
export function readMountTable(file = MOUNTINFO): Array<MountEntry> {
  return parseMountinfo(fs.readFileSync(file, 'utf8'));
}

/**
 * The mount table read again and again, through one descriptor opened at
 * start-up: a pread from offset 0 makes procfs render it afresh (seq_file), with
 * no path lookup and nothing allocated when it has not changed; it is parsed
 * again only when its bytes differ from the last read.
 */
export class MountTableReader {
  private fd: number;
  private buffer = Buffer.alloc(16 * 1024);
  private last = Buffer.alloc(0);
  private entries: Array<MountEntry> = [];

  constructor(readonly file = MOUNTINFO) {
    this.fd = fs.openSync(file, 'r');
  }

  /** The table now, and whether it differs from the previous read. Throws when procfs cannot be read. */
  read(): {entries: ReadonlyArray<MountEntry>, changed: boolean} {
    // procfs hands out a seq_file about a page at a time, however large the buffer: read on until it says the end (0).
    let n = 0;
    for (;;) {
      if (n === this.buffer.length) {
        const larger = Buffer.alloc(this.buffer.length * 2);
        this.buffer.copy(larger);
        this.buffer = larger;
      }
      const got = fs.readSync(this.fd, this.buffer, n, this.buffer.length - n, n);
      if (got === 0)
        break;
      n += got;
    }
    const now = this.buffer.subarray(0, n);
    if (now.equals(this.last))
      return {entries: this.entries, changed: false};
    this.last = Buffer.from(now);
    this.entries = parseMountinfo(now.toString('utf8'));
    return {entries: this.entries, changed: true};
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {}
  }
}
