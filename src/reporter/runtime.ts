import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** statfs(2) f_type of tmpfs and ramfs (linux/magic.h): memory, never a disk. */
const MEMORY_FS = new Set([0x01021994, 0x858458f6]);

function inMemory(dir: string): boolean {
  try {
    return MEMORY_FS.has(fs.statfsSync(dir).type);
  } catch {
    return false;
  }
}

/**
 * A private directory on tmpfs for the spawn helper's files (its children's
 * output): reading them must never wait on a disk, and the root disk may hang
 * too. systemd's RUNTIME_DIRECTORY, else /dev/shm, else /run; the temporary
 * directory only as a last resort, with a warning. Made with mkdtemp (0700, a
 * fresh name) because /dev/shm is writable by everyone. Directories of this
 * reporter's name left by a process that is gone (kill -9) are removed.
 */
export function makeRuntimeDir(name: string): {dir: string, warning?: string} {
  const candidates = [process.env.RUNTIME_DIRECTORY?.split(':')[0], '/dev/shm', '/run'].filter((d): d is string => d !== undefined && d !== '');
  const base = candidates.find(d => inMemory(d) && writable(d));
  const prefix = `ebsmon-report-${name}.`;
  const root = base ?? os.tmpdir();
  removeStale(root, prefix);
  const dir = fs.mkdtempSync(path.join(root, `${prefix}${process.pid}.`));
  return base === undefined ? {dir, warning: `no tmpfs found for the reporter's private files (tried ${candidates.join(', ')}): using ${dir}, so a hung root disk can stall the reporter`} : {dir};
}

function writable(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function removeStale(root: string, prefix: string): void {
  let entries: Array<string>;
  try {
    entries = fs.readdirSync(root);
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const entry of entries) {
    if (!entry.startsWith(prefix))
      continue;
    const pid = Number(/^(\d+)\./.exec(entry.slice(prefix.length))?.[1]);
    // procfs: a pid is in use while /proc/PID exists (a zombie too).
    if (!Number.isInteger(pid) || pid === process.pid || fs.existsSync(`/proc/${pid}`))
      continue;
    const full = path.join(root, entry);
    try {
      const st = fs.lstatSync(full);
      // Only our own directories: never follow or remove what another user put there.
      if (st.isDirectory() && st.uid === uid)
        fs.rmSync(full, {recursive: true, force: true});
    } catch {}
  }
}
