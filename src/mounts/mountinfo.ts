import path from 'node:path';

/** One line of /proc/self/mountinfo (proc(5)). */
export type MountEntry = {
  id: number;
  parent: number;
  /** st_dev of the filesystem's superblock, "major:minor" */
  device: string;
  /** the directory of the filesystem that is mounted here: "/" unless a bind mount of a subdirectory */
  root: string;
  mountPoint: string;
  fstype: string;
  source: string;
  superOptions: string;
};

/** proc(5): space, tab, newline and backslash in these fields are written as octal escapes (\040, \011, \012, \134). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses /proc/self/mountinfo; a line it cannot read is skipped. */
export function parseMountinfo(text: string): Array<MountEntry> {
  const entries: Array<MountEntry> = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    // Six fixed fields, then zero or more optional fields ended by a lone "-", then fstype, source, super options.
    const dash = fields.indexOf('-', 6);
    if (dash === -1 || dash + 2 >= fields.length || !/^\d+:\d+$/.test(fields[2] ?? ''))
      continue;
    entries.push({
      id: Number(fields[0]),
      parent: Number(fields[1]),
      device: fields[2]!,
      root: unescapeMountField(fields[3]!),
      mountPoint: unescapeMountField(fields[4]!),
      fstype: fields[dash + 1]!,
      source: unescapeMountField(fields[dash + 2]!),
      superOptions: fields[dash + 3] ?? '',
    });
  }
  return entries;
}

function covers(mountPoint: string, target: string): boolean {
  return mountPoint === '/' || target === mountPoint || target.startsWith(`${mountPoint}/`);
}

/**
 * The mount a path (absolute, symlinks resolved) is on, as path resolution
 * finds it: walking down from the namespace's root, the shortest covering
 * mount point is crossed first, and only mounts on top of the one just
 * entered are seen below it. So the longest covering mount point wins, a
 * mount stacked on the same point wins over the one under it (it is that
 * one's child), and a mount left under a directory that another mount now
 * hides is not picked, although its mount point is longer.
 */
export function mountOf(entries: ReadonlyArray<MountEntry>, target: string): MountEntry | undefined {
  const ids = new Set(entries.map(e => e.id));
  // The root's parent is outside this namespace (or chroot), so not in the table.
  let current = entries.find(e => e.mountPoint === '/' && !ids.has(e.parent)) ?? entries.find(e => e.mountPoint === '/');
  for (let depth = 0; current !== undefined && depth < entries.length; depth++) {
    let next: MountEntry | undefined;
    for (const entry of entries) {
      if (entry.parent !== current.id || entry.id === current.id || !covers(entry.mountPoint, target))
        continue;
      // Equal length means the same mount point: the later sibling was mounted last.
      if (next === undefined || entry.mountPoint.length <= next.mountPoint.length)
        next = entry;
    }
    if (next === undefined)
      return current;
    current = next;
  }
  return current;
}

export function describeMount(entry: MountEntry): string {
  const bind = entry.root === '/' ? '' : `, bind mount of ${entry.root}`;
  return `${entry.source} (${entry.fstype}${bind}) mounted at ${entry.mountPoint}`;
}

/**
 * The same volume seen the same way: device, mount point, root and type. The
 * mount ID is left out on purpose: a volume unmounted and mounted again at the
 * same place gets a new ID but is still the right disk, and IDs are reused once
 * freed, so an ID proves nothing on its own.
 */
function sameMount(a: MountEntry, b: MountEntry): boolean {
  return a.device === b.device && a.mountPoint === b.mountPoint && a.root === b.root && a.fstype === b.fstype;
}

export type MountCheck = {code: 'EMOUNTGONE' | 'EMOUNTREPLACED', reason: string};

/** Is `target` still on the pinned volume (see sameMount)? */
export function checkMount(entries: ReadonlyArray<MountEntry>, target: string, pinned: MountEntry): MountCheck | null {
  const now = mountOf(entries, target);
  if (now !== undefined && sameMount(now, pinned))
    return null;
  const where = now === undefined ? 'no mount covers it now' : `it is now on ${describeMount(now)}`;
  if (!entries.some(e => sameMount(e, pinned)))
    return {code: 'EMOUNTGONE', reason: `mount gone: ${pinned.source} (${pinned.device}) is no longer mounted at ${pinned.mountPoint}; ${where}`};
  // Pinned to / means it started before its volume was mounted: the new mount is likely the right one, but only a restart may stat the path again.
  const hint = pinned.mountPoint === '/' ? '; the reporter started before this volume was mounted: restart it to watch the volume' : '';
  return {code: 'EMOUNTREPLACED', reason: `mount replaced: ${where}, not the pinned ${describeMount(pinned)} (${pinned.device})${hint}`};
}

export type FstabEntry = {spec: string, file: string, fstype: string};

/** /etc/fstab (fstab(5)): the same octal escapes as mountinfo; swap and "none" are not mount points. */
export function parseFstab(text: string): Array<FstabEntry> {
  const entries: Array<FstabEntry> = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 2 || fields[0]!.startsWith('#'))
      continue;
    const file = unescapeMountField(fields[1]!);
    if (!file.startsWith('/'))
      continue;
    entries.push({spec: unescapeMountField(fields[0]!), file: file === '/' ? '/' : path.posix.normalize(file).replace(/\/+$/, ''), fstype: fields[2] ?? ''});
  }
  return entries;
}

/**
 * A mount /etc/fstab promises for `target` that is deeper than the one it is
 * on now: the volume is not mounted (yet), and the probe would prove the disk
 * underneath.
 */
export function missingFstabMount(fstab: ReadonlyArray<FstabEntry>, target: string, current: MountEntry): FstabEntry | undefined {
  let best: FstabEntry | undefined;
  for (const entry of fstab) {
    if (entry.file.length > current.mountPoint.length && covers(entry.file, target) && (best === undefined || entry.file.length > best.file.length))
      best = entry;
  }
  return best;
}

/** "major:minor" of a dev_t as Linux encodes it (glibc's gnu_dev_major/minor). */
export function deviceNumbers(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}
