import {parseMountinfo, unescapeMountField} from '../mounts';
import type {MountEntry} from '../mounts';

/**
 * Filesystems that hold no disk the service could hang on: memory, the
 * kernel's own views, and pseudo devices (/dev/null opened for writing is
 * on devtmpfs). A descriptor on them never makes a volume to watch.
 */
export const SKIPPED_FSTYPES: ReadonlySet<string> = new Set(['proc', 'sysfs', 'tmpfs', 'ramfs', 'devtmpfs', 'devpts', 'cgroup', 'cgroup2', 'mqueue', 'hugetlbfs',
  'debugfs', 'tracefs', 'securityfs', 'pstore', 'bpf', 'configfs', 'fusectl', 'nsfs', 'autofs', 'binfmt_misc', 'efivarfs', 'rpc_pipefs']);

/** One mount a process holds files open for writing on, as the scanner saw it. */
export type WrittenMount = {
  /** the mount namespace (its inode) the mount ID belongs to */
  ns: string;
  mountId: number;
  /** the first such file found, and who holds it */
  pid: number;
  fd: number;
  flags: string;
  file: string;
  /** files open for writing on this mount (all processes of the namespace) */
  count: number;
};

export type ScanReport = {
  /** every process scanned, with its mount namespace */
  processes: Array<{pid: number, ns: string}>;
  mountinfo: Map<string, Array<MountEntry>>;
  written: Array<WrittenMount>;
  /** the scanner printed "end": the report is whole */
  complete: boolean;
};

/** Reads the scanner's output (see script.ts); lines it does not know are skipped. */
export function parseScan(text: string): ScanReport {
  const report: ScanReport = {processes: [], mountinfo: new Map(), written: [], complete: false};
  const mountLines = new Map<string, Array<string>>();
  const counts = new Map<string, number>();
  for (const line of text.split('\n')) {
    const space = line.indexOf(' ');
    const word = space === -1 ? line : line.slice(0, space);
    if (word === 'end') {
      report.complete = true;
      continue;
    }
    const rest = line.slice(space + 1);
    if (word === 'proc') {
      const m = /^(\d+) (\d+)$/.exec(rest);
      if (m !== null)
        report.processes.push({pid: Number(m[1]), ns: m[2]!});
    } else if (word === 'mi') {
      const m = /^(\d+) (.*)$/.exec(rest);
      if (m !== null)
        mountLines.set(m[1]!, [...(mountLines.get(m[1]!) ?? []), m[2]!]);
    } else if (word === 'w') {
      const m = /^(\d+) (\d+) (\d+) (\d+) ([0-7]+) (\/.*)$/.exec(rest);
      if (m !== null)
        report.written.push({ns: m[1]!, mountId: Number(m[2]), pid: Number(m[3]), fd: Number(m[4]), flags: m[5]!, file: unescapeMountField(m[6]!), count: 1});
    } else if (word === 'n') {
      const m = /^(\d+) (\d+) (\d+)$/.exec(rest);
      if (m !== null)
        counts.set(`${m[1]} ${m[2]}`, Number(m[3]));
    }
  }
  for (const [ns, lines] of mountLines)
    report.mountinfo.set(ns, parseMountinfo(lines.join('\n')));
  for (const written of report.written)
    written.count = counts.get(`${written.ns} ${written.mountId}`) ?? 1;
  return report;
}

/** A filesystem the service writes to: one per device, however many mounts or namespaces show it. */
export type WrittenVolume = {
  /** st_dev of the filesystem, "major:minor": what identifies it in any namespace */
  device: string;
  /** the mount as the service sees it (its own namespace) */
  mount: MountEntry;
  /** a file proving it, as the service names it; " (deleted)" when unlinked */
  file: string;
  pid: number;
  /** files open for writing on it */
  count: number;
};

/** Why a mount the service writes to is not a volume to watch: null when it is one. */
export function skipReason(mount: MountEntry): string | null {
  if (SKIPPED_FSTYPES.has(mount.fstype))
    return `${mount.fstype} holds no disk`;
  return null;
}

/**
 * The volumes a scan found written, in a stable order (by device). A mount
 * ID the namespace's table does not list is a kernel-internal mount (memfd,
 * SysV shared memory): memory, skipped.
 */
export function writtenVolumes(report: ScanReport): Array<WrittenVolume> {
  const byDevice = new Map<string, WrittenVolume>();
  for (const written of report.written) {
    const mount = report.mountinfo.get(written.ns)?.find(e => e.id === written.mountId);
    if (mount === undefined || skipReason(mount) !== null)
      continue;
    const known = byDevice.get(mount.device);
    if (known === undefined)
      byDevice.set(mount.device, {device: mount.device, mount, file: written.file, pid: written.pid, count: written.count});
    else
      known.count += written.count;
  }
  return [...byDevice.values()].sort((a, b) => a.device.localeCompare(b.device));
}
