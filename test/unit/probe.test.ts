import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {failureReason, openFlags, parseProbeOutput, probeArgv} from '../../src/probe';

describe('probe argv', () => {
  const target = {dir: '/var/lib/my sql', name: 'mysql', dev: 66305n, ino: 12n};

  it('runs perl with the script and every value as its own argument (no shell)', () => {
    const argv = probeArgv(target, '0', 'direct', 'ebsmon probe name=mysql pid=1 seq=2');
    assert.deepEqual(argv.slice(0, 2), ['perl', '-e']);
    // The script reads its arguments in the order they follow it.
    assert.ok(argv[2]!.startsWith('\nmy ($dir, $name, $dev, $dino, $fino, $head, $flags, $create, $ENOENT, $EEXIST) = @ARGV;\n'), argv[2]!.slice(0, 200));
    assert.deepEqual(argv.slice(3), ['/var/lib/my sql', '.ebsmon-probe-mysql', '66305', '12', '0', 'ebsmon probe name=mysql pid=1 seq=2',
      String(openFlags('direct')), String(fs.constants.O_CREAT | fs.constants.O_EXCL), String(os.constants.errno.ENOENT), String(os.constants.errno.EEXIST)]);
  });

  it('runs the script from a file when the reporter wrote one (a short request to its spawn helper)', () => {
    const argv = probeArgv(target, '7', 'dsync', 'head', '/dev/shm/ebsmon-report-mysql.1.x/probe.pl');
    assert.deepEqual(argv.slice(0, 3), ['perl', '/dev/shm/ebsmon-report-mysql.1.x/probe.pl', '/var/lib/my sql']);
    assert.equal(argv.length, probeArgv(target, '7', 'dsync', 'head').length - 1);
  });

  it('is a probe perl runs: it creates the file, writes one 4 KiB block and reads it back, then reuses the file', async () => {
    const {path: dir, cleanup} = await tmpDir({unsafeCleanup: true});
    try {
      const {dev, ino} = fs.statSync(dir, {bigint: true});
      const target = {dir, name: 'unit', dev, ino};
      const run = (fileInode: string) => {
        const argv = probeArgv(target, fileInode, 'dsync', 'ebsmon probe seq=1');
        const result = spawnSync(argv[0]!, argv.slice(1), {encoding: 'utf8', timeout: 10_000});
        assert.equal(result.stderr, '');
        return result.stdout;
      };
      const first = run('0');
      const file = path.join(dir, '.ebsmon-probe-unit');
      const inode = String(fs.statSync(file).ino);
      assert.equal(first, `created ${inode}\nok\n`);
      assert.equal(fs.readFileSync(file, 'utf8'), `ebsmon probe seq=1${'.'.repeat(4095 - 'ebsmon probe seq=1'.length)}\n`);
      assert.equal(run(inode), 'ok\n', 'its own file, found by inode: nothing created');
    } finally {
      await cleanup();
    }
  });

  it('opens without following links or blocking on a FIFO; O_DIRECT only for the direct method', () => {
    const c = fs.constants;
    for (const method of ['direct', 'dsync'] as const) {
      const flags = openFlags(method);
      for (const flag of [c.O_RDWR, c.O_NOFOLLOW, c.O_NONBLOCK, c.O_DSYNC])
        assert.equal(flags & flag, flag);
      assert.equal(flags & c.O_CREAT, 0, 'creating is a separate, O_EXCL, step');
      assert.equal((flags & c.O_DIRECT) !== 0, method === 'direct');
    }
  });
});

describe('probe output', () => {
  it('reads what was found, created and the verdict', () => {
    const report = parseProbeOutput('found 1000 1 77 symlink\nmoved .ebsmon-probe-x.planted.42\ncreated 81\nok\n');
    assert.deepEqual(report, {
      events: [{kind: 'found', uid: 1000, links: 1, inode: '77', what: 'symlink'}, {kind: 'moved', to: '.ebsmon-probe-x.planted.42'}],
      created: '81',
      ok: true,
    });
    assert.deepEqual(parseProbeOutput('stale 0 1 5 regular file\nmissing\n').events, [{kind: 'stale', uid: 0, links: 1, inode: '5', what: 'regular file'}, {kind: 'missing'}]);
  });

  it('turns an errno number into its name, and keeps the probe\'s own codes', () => {
    const report = parseProbeOutput(`fail write ${os.constants.errno.EIO} Input/output error\n`);
    assert.equal(report.ok, false);
    assert.deepEqual(failureReason(report.failure!), {code: 'EIO', reason: 'write: EIO: input/output error'});
    assert.deepEqual(failureReason({stage: 'open', code: String(os.constants.errno.EROFS), text: 'Read-only file system'}), {code: 'EROFS', reason: 'open: EROFS: read-only file system'});
    assert.deepEqual(failureReason({stage: 'pin', code: 'EXDEV', text: 'the probe file is on device 1, not the pinned device 2'}), {code: 'EXDEV', reason: 'pin: the probe file is on device 1, not the pinned device 2'});
  });

  it('ignores lines it does not know', () => {
    assert.deepEqual(parseProbeOutput('hello\ncreated\nfail\n'), {events: [], ok: false});
  });
});
