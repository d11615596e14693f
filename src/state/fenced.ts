import fs from 'node:fs';
import path from 'node:path';

/**
 * A word from the monitor to each reporter, on tmpfs: STATE_DIR/fenced/NAME
 * exists while reporter NAME is fenced, and holds when its fence began (epoch
 * ms). A reporter whose rejoin condition is a program runs it only then. The
 * FIFO carries words one way only; this is the other way, and reading it (a
 * failed open, mostly) costs a reporter a few microseconds a tick.
 */
export const FENCED_DIR = 'fenced';

export function fencedFile(stateDir: string, name: string): string {
  return path.join(stateDir, FENCED_DIR, name);
}

/** When the monitor says this reporter's fence began (epoch ms), or null when it is not fenced (or says nothing). */
export function readFencedSince(stateDir: string, name: string): number | null {
  let text: string;
  try {
    text = fs.readFileSync(fencedFile(stateDir, name), 'utf8');
  } catch {
    return null;
  }
  const since = Number(text.trim());
  return Number.isFinite(since) && since > 0 ? since : null;
}

/** The monitor's side: one file per fenced reporter, written atomically (rename), removed when the fence lifts. */
export class FencedFiles {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, FENCED_DIR);
    fs.mkdirSync(this.dir, {recursive: true, mode: 0o755});
  }

  /** Exactly these reporters, fenced since these times: stale files (a previous monitor's) are removed. */
  sync(fenced: ReadonlyMap<string, number>): void {
    for (const entry of fs.readdirSync(this.dir))
      if (!fenced.has(entry) && !entry.startsWith('.'))
        this.clear(entry);
    for (const [name, since] of fenced)
      this.set(name, since);
  }

  set(name: string, since: number): void {
    const file = path.join(this.dir, name);
    const tmp = path.join(this.dir, `.${name}.tmp`);
    fs.writeFileSync(tmp, `${Math.round(since)}\n`, {mode: 0o644});
    fs.renameSync(tmp, file);
  }

  clear(name: string): void {
    fs.rmSync(path.join(this.dir, name), {force: true});
  }
}
