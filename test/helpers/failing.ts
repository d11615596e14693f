import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {Teardown, registerChild, sh, waitFor} from './rig';

const mounted = (point: string) => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some(line => line.split(' ')[1] === point);

/**
 * A disk that fails I/O with EIO on command, as a dying or detached volume
 * does (nvme_core.io_timeout expiring, an iSCSI session gone): ext4 on a loop
 * device whose backing file is served by failfs.py, a small FUSE server that
 * fails every read, write and fsync while told to. The ext4 has no journal
 * and is mounted errors=continue,lazytime: a journal write failing during the
 * test would abort the journal and leave the filesystem read-only, which is
 * the EROFS case, not this one.
 */
export class FailingDisk {
  failing = false;

  private constructor(readonly mountpoint: string, readonly device: string, readonly daemonPid: number) {
  }

  static async create(dir: string, teardown: Teardown, sizeMb = 64): Promise<FailingDisk> {
    const backing = path.join(dir, 'failfs-backing', 'disk.img');
    const fuse = path.join(dir, 'failfs');
    const mountpoint = path.join(dir, 'failing');
    for (const d of [path.dirname(backing), fuse, mountpoint])
      fs.mkdirSync(d, {recursive: true});
    sh(['truncate', '-s', `${sizeMb}M`, backing]);
    sh(['mkfs.ext4', '-q', '-F', '-O', '^has_journal', backing]);
    // Debian's python3, not one a user's PATH may put first.
    const daemon = spawn('/usr/bin/python3', [path.join(__dirname, 'failfs.py'), backing, fuse], {stdio: ['ignore', 'pipe', 'inherit'], detached: true});
    daemon.unref();
    const pid = daemon.pid!;
    registerChild(pid);
    let out = '';
    daemon.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
    });
    teardown.add(['kill', String(pid)]);
    teardown.add(['umount', '-l', fuse]);
    await waitFor('the failfs mount', () => out.includes('ready') && mounted(fuse), 10_000);
    const device = sh(['losetup', '-f', '--show', path.join(fuse, 'disk.img')]).trim();
    teardown.add(['losetup', '-d', device]);
    sh(['mount', '-o', 'errors=continue,lazytime', device, mountpoint]);
    teardown.add(['umount', '-l', mountpoint]);
    teardown.add(['umount', mountpoint]);
    // Registered last so it runs first, also in the crash watchdog: I/O must work for the teardown.
    teardown.add(['kill', '-USR2', String(pid)]);
    return new FailingDisk(mountpoint, device, pid);
  }

  fail(): void {
    process.kill(this.daemonPid, 'SIGUSR1');
    this.failing = true;
  }

  heal(): void {
    if (this.failing)
      process.kill(this.daemonPid, 'SIGUSR2');
    this.failing = false;
  }
}
