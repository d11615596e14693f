import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {MountTableReader, checkMount, deviceNumbers, describeMount, missingFstabMount, mountOf, parseFstab, parseMountinfo, unescapeMountField} from '../../src/mounts';
import {requireRoot} from '../helpers/rig';

// Shaped like a real /proc/self/mountinfo: optional fields (shared:N, master:N) of varying number before the "-".
const TABLE = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw',
  '30 22 259:1 / /var/lib/mysql rw,noatime shared:20 - ext4 /dev/nvme1n1 rw',
  '31 30 259:2 / /var/lib/mysql/binlog rw shared:21 master:3 - xfs /dev/nvme2n1 rw,attr2',
  '32 22 259:3 /exports/www /srv/my\\040site rw - ext4 /dev/nvme3n1 rw',
  '33 22 0:45 / /data rw - btrfs /dev/sdb rw,subvol=/',
  'garbage that is not a mountinfo line',
  '',
].join('\n');

describe('mountinfo', () => {
  const entries = parseMountinfo(TABLE);

  it('parses every field, skips what it cannot read', () => {
    assert.equal(entries.length, 6);
    assert.deepEqual(entries[3], {id: 31, parent: 30, device: '259:2', root: '/', mountPoint: '/var/lib/mysql/binlog', fstype: 'xfs', source: '/dev/nvme2n1', superOptions: 'rw,attr2'});
  });

  it('unescapes octal escapes: space, tab, newline, backslash', () => {
    assert.equal(entries[4]!.mountPoint, '/srv/my site');
    assert.equal(entries[4]!.root, '/exports/www');
    assert.equal(unescapeMountField('a\\040b\\011c\\012d\\134e'), 'a b\tc\nd\\e');
    assert.equal(unescapeMountField('\\0401'), ' 1', 'exactly three octal digits');
  });

  const cases: Array<[string, number]> = [
    ['/var/lib/mysql', 30],
    ['/var/lib/mysql/ibdata', 30],
    ['/var/lib/mysql/binlog', 31],
    ['/var/lib/mysql/binlog/x', 31],
    ['/var/lib/mysqlx', 22],
    ['/var/lib', 22],
    ['/srv/my site/htdocs', 32],
    ['/srv/my', 22],
    ['/', 22],
  ];
  for (const [target, id] of cases) {
    it(`finds ${target} on mount ${id} (longest mount point, on component boundaries)`, () => {
      assert.equal(mountOf(entries, target)?.id, id);
    });
  }

  it('takes the last of mounts stacked on one mount point', () => {
    const stacked = parseMountinfo(`${TABLE}\n40 30 7:5 / /var/lib/mysql rw - ext4 /dev/loop5 rw\n41 40 7:6 / /var/lib/mysql rw - ext4 /dev/loop6 rw\n`);
    assert.equal(mountOf(stacked, '/var/lib/mysql/x')?.id, 41);
    // The binlog mount (31) sat on the old top one: it is hidden now, although its mount point is longer.
    assert.equal(mountOf(stacked, '/var/lib/mysql/binlog/x')?.id, 41);
  });

  it('starts from the namespace root whose parent is outside the table', () => {
    const container = parseMountinfo('500 400 0:90 / / rw - overlay overlay rw\n501 500 259:1 /volumes/db /var/lib/mysql rw - ext4 /dev/nvme1n1 rw\n');
    assert.equal(mountOf(container, '/var/lib/mysql')?.id, 501);
    assert.equal(mountOf(container, '/etc')?.id, 500);
    assert.equal(describeMount(container[1]!), '/dev/nvme1n1 (ext4, bind mount of /volumes/db) mounted at /var/lib/mysql');
  });

  it('checks a pin: same volume, gone, replaced, mounted again', () => {
    const pinned = entries[2]!;
    assert.equal(checkMount(entries, '/var/lib/mysql', pinned), null);

    const gone = checkMount(entries.filter(e => e.id !== 30 && e.id !== 31), '/var/lib/mysql', pinned);
    assert.equal(gone?.code, 'EMOUNTGONE');
    assert.match(gone!.reason, /^mount gone: \/dev\/nvme1n1 \(259:1\) is no longer mounted at \/var\/lib\/mysql; it is now on \/dev\/vda \(ext4\) mounted at \/$/);

    const over = parseMountinfo(`${TABLE}\n40 30 7:5 / /var/lib/mysql rw - ext4 /dev/loop5 rw\n`);
    const replaced = checkMount(over, '/var/lib/mysql', pinned);
    assert.equal(replaced?.code, 'EMOUNTREPLACED');
    assert.match(replaced!.reason, /^mount replaced: it is now on \/dev\/loop5 \(ext4\) mounted at \/var\/lib\/mysql, not the pinned \/dev\/nvme1n1/);

    // Unmounted and mounted again at the same place: a new mount ID, the same disk.
    const again = parseMountinfo(TABLE.replace('30 22 259:1', '57 22 259:1').replace('31 30 ', '31 57 '));
    assert.equal(checkMount(again, '/var/lib/mysql', pinned), null);
    // A different device at the same place is not.
    const other = parseMountinfo(TABLE.replace('30 22 259:1', '30 22 259:9'));
    assert.equal(checkMount(other, '/var/lib/mysql', pinned)?.code, 'EMOUNTGONE');
  });
});

describe('fstab', () => {
  const fstab = parseFstab([
    '# /etc/fstab',
    'UUID=abcd / ext4 errors=remount-ro 0 1',
    'UUID=1234   /var/lib/mysql/  ext4  defaults,nofail 0 2',
    '/dev/nvme3n1 /srv/my\\040site ext4 defaults 0 2',
    '/swapfile none swap sw 0 0',
    '',
  ].join('\n'));

  it('parses mount points, normalized and unescaped; skips comments and swap', () => {
    assert.deepEqual(fstab.map(e => e.file), ['/', '/var/lib/mysql', '/srv/my site']);
  });

  it('names the volume that should be there but is not mounted', () => {
    const root = parseMountinfo(TABLE)[0]!;
    assert.equal(missingFstabMount(fstab, '/var/lib/mysql/data', root)?.spec, 'UUID=1234');
    assert.equal(missingFstabMount(fstab, '/var/lib/other', root), undefined);
    const mysql = parseMountinfo(TABLE)[2]!;
    assert.equal(missingFstabMount(fstab, '/var/lib/mysql', mysql), undefined);
  });
});

describe('deviceNumbers', () => {
  const cases: Array<[bigint, string]> = [
    [0xfe00n, '254:0'],
    [(259n << 8n) | 1n, '259:1'],
    [(0n << 8n) | 45n, '0:45'],
    // glibc's makedev for major 4096, minor 300: the high bits go above bit 32 and 20.
    [((300n & 0xffn) | ((4096n & 0xfffn) << 8n) | ((4096n & ~0xfffn) << 32n) | ((300n & ~0xffn) << 12n)), '4096:300'],
  ];
  for (const [dev, expected] of cases) {
    it(`decodes ${dev} as ${expected}`, () => {
      assert.equal(deviceNumbers(dev), expected);
    });
  }
});

describe('the mount table read again and again', () => {
  it('reads the whole table, however many pages it fills (procfs gives about a page a read)', async (t: TestContext) => {
    if (!requireRoot(t))
      return;
    // A mount namespace of its own with 200 more mounts (stacked on one directory of it): a table of several pages.
    const holder = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'for i in $(seq 200); do mount -t tmpfs -o size=4k ebsmon-test /mnt || exit 1; done; echo ready; exec sleep 60'], {stdio: ['ignore', 'pipe', 'inherit']});
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', () => resolve());
        holder.on('exit', code => reject(new Error(`unshare exited ${code}`)));
      });
      const file = `/proc/${holder.pid}/mountinfo`;
      const whole = fs.readFileSync(file, 'utf8');
      assert.ok(whole.length > 2 * 4096, `${whole.length} bytes`);
      const reader = new MountTableReader(file);
      try {
        const first = reader.read();
        assert.equal(first.changed, true);
        assert.equal(first.entries.length, whole.split('\n').filter(line => line !== '').length);
        assert.equal(first.entries.filter(e => e.source === 'ebsmon-test').length, 200);
      } finally {
        reader.close();
      }
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
