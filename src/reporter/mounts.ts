import {MountTableReader, checkMount} from '../mounts';
import type {PathPin} from '../probe';
import type {MountProblem} from './lifecycle';

/**
 * Is each watched path still on the mount it was pinned to? From procfs
 * only: after start-up the reporter process never stats or opens a watched
 * path (that can hang). Asked every tick and after every passing probe; the
 * answer is worked out again only when the mount table changed.
 */
export class MountChecks {
  private readonly reader: MountTableReader;
  private problems = new Map<string, MountProblem>();

  constructor(private readonly pins: ReadonlyArray<PathPin>) {
    this.reader = new MountTableReader();
  }

  now(): ReadonlyMap<string, MountProblem> {
    let table;
    try {
      table = this.reader.read();
    } catch (error) {
      return new Map(this.pins.map(pin => [pin.path, {code: 'EMOUNTTABLE', reason: `cannot read the mount table: ${(error as Error).message}`}]));
    }
    if (table.changed) {
      this.problems = new Map();
      for (const pin of this.pins) {
        const found = checkMount(table.entries, pin.dir, pin.mount);
        if (found !== null)
          this.problems.set(pin.path, found);
      }
    }
    return this.problems;
  }

  close(): void {
    this.reader.close();
  }
}
