import {MountTableReader, checkMount} from '../mounts';
import type {MountEntry} from '../mounts';
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
  private readonly pins = new Map<string, PathPin>();
  /** a path added or removed: worked out again even if the table did not change */
  private stale = false;

  constructor(pins: ReadonlyArray<PathPin>) {
    this.reader = new MountTableReader();
    for (const pin of pins)
      this.pins.set(pin.path, pin);
  }

  add(pin: PathPin): void {
    this.pins.set(pin.path, pin);
    this.stale = true;
  }

  remove(path: string): void {
    this.stale = this.pins.delete(path) || this.stale;
  }

  private entries: ReadonlyArray<MountEntry> = [];

  /** The table as last read (discovery finds a volume's mount here by its device). */
  table(): ReadonlyArray<MountEntry> {
    this.now();
    return this.entries;
  }

  now(): ReadonlyMap<string, MountProblem> {
    let table;
    try {
      table = this.reader.read();
      this.entries = table.entries;
    } catch (error) {
      return new Map([...this.pins.values()].map(pin => [pin.path, {code: 'EMOUNTTABLE', reason: `cannot read the mount table: ${(error as Error).message}`}]));
    }
    if (table.changed || this.stale) {
      this.stale = false;
      this.problems = new Map();
      for (const pin of this.pins.values()) {
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
