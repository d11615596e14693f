import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {Teardown, processState, sh, waitFor} from './rig';

const mounted = (point: string) => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some(line => line.split(' ')[1] === point);

/**
 * A disk that hangs for reads AND writes, as a dead network volume does:
 * ext4 on a loop device whose backing file lives on a bindfs (FUSE) mount.
 * hang() stops the FUSE daemon (SIGSTOP) and drops the page cache, so that
 * any I/O not already in memory waits in D state until resume() (SIGCONT).
 * The teardown (and the crash watchdog) resumes the daemon first: a hung
 * mount's processes cannot even be killed.
 */
export class HungDisk {
  hung = false;

  private constructor(readonly mountpoint: string, readonly device: string, readonly daemonPid: number) {
  }

  static async create(dir: string, teardown: Teardown, sizeMb = 256): Promise<HungDisk> {
    const source = path.join(dir, 'fuse-source');
    const fuse = path.join(dir, 'fuse');
    const mountpoint = path.join(dir, 'disk');
    for (const d of [source, fuse, mountpoint])
      fs.mkdirSync(d, {recursive: true});
    // -f: the daemon stays our child, so we know the one pid to stop and continue.
    const daemon = spawn('bindfs', ['-f', '-o', 'allow_other', source, fuse], {stdio: 'ignore', detached: true});
    daemon.unref();
    const pid = daemon.pid!;
    teardown.add(['umount', '-l', fuse]);
    teardown.add(['kill', String(pid)]);
    await waitFor('the FUSE mount', () => mounted(fuse), 10_000);
    const image = path.join(fuse, 'disk.img');
    sh(['truncate', '-s', `${sizeMb}M`, image]);
    sh(['mkfs.ext4', '-q', '-F', image]);
    const device = sh(['losetup', '-f', '--show', image]).trim();
    teardown.add(['losetup', '-d', device]);
    sh(['mount', device, mountpoint]);
    teardown.add(['umount', '-l', mountpoint]);
    teardown.add(['umount', mountpoint]);
    // Registered last so it runs first, also in the crash watchdog.
    teardown.add(['kill', '-CONT', String(pid)]);
    return new HungDisk(mountpoint, device, pid);
  }

  /**
   * dropCache false: what the page cache holds still reads (a warm cache); writes and every other read hang.
   * Returns when the disk stopped answering (the sync before it can take seconds on a busy machine).
   */
  hang({dropCache = true}: {dropCache?: boolean} = {}): number {
    // Dirty pages would otherwise be written back into a stopped daemon forever.
    sh(['sync']);
    process.kill(this.daemonPid, 'SIGSTOP');
    const stoppedAt = Date.now();
    this.hung = true;
    // Nothing of the disk left in memory but what processes have mapped: reads must reach the device.
    if (dropCache)
      fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return stoppedAt;
  }

  resume(): void {
    if (this.hung)
      process.kill(this.daemonPid, 'SIGCONT');
    this.hung = false;
  }

  /** Proof that the disk hangs: an uncached read of it sits in D state. Returns its pid (it ends after resume()). */
  async provesHung(file: string): Promise<boolean> {
    const reader = spawn('cat', [file], {stdio: 'ignore'});
    reader.unref();
    const pid = reader.pid!;
    try {
      await waitFor('a reader stuck in D state', () => processState(pid) === 'D', 5_000);
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * Copies programs and the shared libraries they load (as ldd lists them)
 * into an overlay's upper directory for /usr, so that a process in a mount
 * namespace with that overlay reads them from the hung disk.
 */
export function copyIntoUsrOverlay(upper: string, programs: ReadonlyArray<string>): void {
  const files = new Set<string>();
  for (const program of programs) {
    const real = fs.realpathSync(program);
    files.add(real);
    for (const match of sh(['ldd', real], {allowFail: true}).matchAll(/(\/\S+) \(0x/g))
      files.add(fs.realpathSync(match[1]!));
  }
  for (const file of files) {
    if (!file.startsWith('/usr/'))
      continue;
    const target = path.join(upper, file.slice('/usr/'.length));
    fs.mkdirSync(path.dirname(target), {recursive: true});
    fs.copyFileSync(file, target);
    fs.chmodSync(target, fs.statSync(file).mode);
  }
}
