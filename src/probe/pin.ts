import fs from 'node:fs';
import path from 'node:path';

import {StartupError, errnoCode} from '../errors';
import {MOUNTINFO, deviceNumbers, describeMount, missingFstabMount, mountOf, parseFstab} from '../mounts';
import type {MountEntry} from '../mounts';
const FSTAB = '/etc/fstab';

/** A watched directory as found at start-up; after that only the mount table is read, never the path. */
export type PathPin = {
  /** as given with --monitor */
  path: string;
  /** absolute, symlinks resolved */
  dir: string;
  mount: MountEntry;
  /** the directory's own st_dev and inode: what the probe child checks */
  dev: bigint;
  ino: bigint;
  /** dev as "major:minor" */
  device: string;
  /** said once at start-up */
  warnings: Array<string>;
  /** why this path is not on a volume of its own; with --require-mount these stop the start */
  unmounted: Array<string>;
};

function readFstab(): ReturnType<typeof parseFstab> {
  try {
    return parseFstab(fs.readFileSync(FSTAB, 'utf8'));
  } catch {
    return [];
  }
}

/** Start-up checks, so a typo fails at once instead of as a fence later. */
function statDirectory(dir: string): fs.BigIntStats {
  let stat: fs.BigIntStats;
  try {
    stat = fs.statSync(dir, {bigint: true});
  } catch (error) {
    throw new StartupError(`--monitor=${dir}: ${errnoCode(error) === 'ENOENT' ? 'no such directory' : String(error)}`);
  }
  if (!stat.isDirectory())
    throw new StartupError(`--monitor=${dir}: not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new StartupError(`--monitor=${dir}: not writable by this user; the probe writes a block there`);
  }
  return stat;
}

/** Resolves a watched path and finds its mount. Start-up only: it stats the path. */
export function pinPath(given: string, entries: ReadonlyArray<MountEntry>, fstab = readFstab()): PathPin {
  const stat = statDirectory(given);
  const dir = fs.realpathSync(given);
  const mount = mountOf(entries, dir);
  if (mount === undefined)
    throw new StartupError(`--monitor=${given}: no mount in ${MOUNTINFO} covers ${dir}`);
  // Overlay gives files an st_dev of their layer, not the overlay's (unless all layers share one filesystem or xino is on): the probe could never check its device.
  if (mount.fstype === 'overlay') {
    const upper = /(?:^|,)upperdir=([^,]*)/.exec(mount.superOptions)?.[1];
    throw new StartupError(`--monitor=${given}: ${dir} is on an overlay mount (${mount.mountPoint}); watch the volume under it instead${upper === undefined ? '' : ` (its upper layer is ${upper})`}`);
  }
  const device = deviceNumbers(stat.dev);
  const pin: PathPin = {path: given, dir, mount, dev: stat.dev, ino: stat.ino, device, warnings: [], unmounted: []};

  const missing = missingFstabMount(fstab, dir, mount);
  if (missing !== undefined)
    pin.unmounted.push(`${given}: /etc/fstab mounts ${missing.spec} at ${missing.file}, but that is not mounted: the path is on ${describeMount(mount)} now, and the probe would prove that disk instead`);
  else if (mount.mountPoint === '/')
    pin.unmounted.push(`${given}: no separate volume is mounted there: it is on / (${mount.source}, ${mount.fstype}), so the probe proves the root disk`);
  // btrfs gives each subvolume an st_dev of its own, which mountinfo does not show: the mount is pinned by its ID and device, the probe file by the directory's st_dev.
  if (device !== mount.device)
    pin.warnings.push(`${given}: the directory's st_dev ${device} differs from the mount's ${mount.device} (${mount.fstype}${mount.fstype === 'btrfs' ? ' subvolume' : ''}); the probe checks that its file is on ${device}`);
  return pin;
}

/** A log file on a watched volume blocks with it: the log line that would say so never arrives. */
export function logfileWarnings(logfile: string, pins: ReadonlyArray<PathPin>, entries: ReadonlyArray<MountEntry>): Array<string> {
  let dir: string;
  let dev: bigint;
  try {
    // The log file may not exist yet (it is opened asynchronously): then its directory says where it will be.
    const real = fs.existsSync(logfile) ? fs.realpathSync(logfile) : path.join(fs.realpathSync(path.dirname(logfile)), path.basename(logfile));
    dir = path.dirname(real);
    dev = fs.statSync(fs.existsSync(real) ? real : dir, {bigint: true}).dev;
  } catch {
    return [];
  }
  const mount = mountOf(entries, dir);
  return pins
    .filter(pin => pin.dev === dev || (mount !== undefined && mount.id === pin.mount.id))
    .map(pin => `--logfile=${logfile} is on the same device as ${pin.path} (${pin.device}): when that disk hangs, so do the reporter's log writes`);
}
