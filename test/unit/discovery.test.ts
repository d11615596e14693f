import assert from 'node:assert/strict';
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {describe, it} from 'node:test';

import {SCAN_SCRIPT, discoveryStep, initialDiscovery, parseScan, probeDirFor, writtenVolumes} from '../../src/discovery';
import type {DiscoveryConfig, FoundVolume} from '../../src/discovery';
import {parseMountinfo} from '../../src/mounts';

// What the scanner prints (script.ts) for mysqld with its data and binlog on two volumes, its log on /, and its own mount namespace.
const SCAN = [
  'proc 812 4026532001',
  'mi 4026532001 22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  'mi 4026532001 23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw',
  'mi 4026532001 25 22 0:23 / /dev/shm rw shared:3 - tmpfs tmpfs rw',
  'mi 4026532001 30 22 259:1 / /var/lib/mysql rw,noatime shared:20 - ext4 /dev/nvme1n1 rw',
  'mi 4026532001 31 22 259:2 / /binlog rw shared:21 - xfs /dev/nvme2n1 rw,attr2',
  'mi 4026532001 32 22 259:2 /sub /binlog2 rw shared:21 - xfs /dev/nvme2n1 rw,attr2',
  'proc 813 4026532001',
  'w 4026532001 30 812 14 0100002 /var/lib/mysql/ibdata1',
  'w 4026532001 31 812 20 02100001 /binlog/mysql-bin.000042',
  'w 4026532001 32 813 3 0100001 /binlog2/with\\040space\\012and\\134 (deleted)',
  'w 4026532001 25 812 9 0100002 /dev/shm/scratch',
  'w 4026532001 99 812 11 0100002 /memfd:jit (deleted)',
  'w 4026532001 22 812 2 0102001 /var/log/mysql/error.log',
  'n 4026532001 22 1',
  'n 4026532001 25 1',
  'n 4026532001 30 212',
  'n 4026532001 31 2',
  'n 4026532001 32 1',
  'n 4026532001 99 1',
  'garbage line',
  'end',
  '',
].join('\n');

describe('the scanner\'s report', () => {
  const report = parseScan(SCAN);

  it('reads processes, each namespace\'s mounts, and the first file written on each mount with the count', () => {
    assert.equal(report.complete, true);
    assert.deepEqual(report.processes, [{pid: 812, ns: '4026532001'}, {pid: 813, ns: '4026532001'}]);
    assert.equal(report.mountinfo.get('4026532001')?.length, 6);
    assert.deepEqual(report.written[1], {ns: '4026532001', mountId: 31, pid: 812, fd: 20, flags: '02100001', file: '/binlog/mysql-bin.000042', count: 2});
    assert.equal(report.written[2]!.file, '/binlog2/with space\nand\\ (deleted)', 'escaped as mountinfo is');
  });

  it('is not complete without its end line (the scanner died mid-way)', () => {
    assert.equal(parseScan(SCAN.replace('end\n', '')).complete, false);
  });

  it('gives one volume per device, skips memory and kernel filesystems and mounts the table does not list', () => {
    const volumes = writtenVolumes(report);
    assert.deepEqual(volumes.map(v => [v.device, v.mount.mountPoint, v.file, v.count]), [
      ['254:0', '/', '/var/log/mysql/error.log', 1],
      ['259:1', '/var/lib/mysql', '/var/lib/mysql/ibdata1', 212],
      // Two mounts of one filesystem (a bind of a subdirectory): one volume, the files of both.
      ['259:2', '/binlog', '/binlog/mysql-bin.000042', 3],
    ]);
  });
});

const HERE = parseMountinfo([
  '22 1 254:0 / / rw - ext4 /dev/vda rw',
  '30 22 259:1 / /var/lib/mysql rw - ext4 /dev/nvme1n1 rw',
  '31 22 259:2 / /srv/binlog rw - xfs /dev/nvme2n1 rw',
].join('\n'));

function found(device: string, file: string, here: boolean): FoundVolume {
  const mount = parseMountinfo(`40 22 ${device} / /m${device.replace(':', '')} rw - ext4 /dev/x${device.replace(':', '')} rw`)[0]!;
  return {device, mount, file, pid: 812, count: 1, ...(here ? {here: HERE.find(e => e.device === device)!} : {})};
}

describe('which volumes are watched', () => {
  const watchConfig: DiscoveryConfig = {mode: 'watch', graceScans: 3, maxPaths: 8, covered: new Set()};

  it('probes at the root of the volume\'s mount here', () => {
    assert.equal(probeDirFor(HERE[1]!), '/var/lib/mysql');
    assert.equal(probeDirFor(HERE[0]!), '/');
  });

  it('watches a volume once its directory is made, and drops it after the grace scans', () => {
    let life = initialDiscovery(watchConfig);
    const volume = found('259:2', '/binlog/mysql-bin.000042', true);
    let stepped = discoveryStep(life, {type: 'scanned', volumes: [volume], processes: 1, what: 'pid 812'});
    assert.deepEqual(stepped.effects.map(e => e.type), ['pin']);
    assert.deepEqual(stepped.effects[0], {type: 'pin', device: '259:2', path: '/srv/binlog', volume});
    stepped = discoveryStep(stepped.life, {type: 'pinned', device: '259:2', path: '/srv/binlog'});
    assert.deepEqual(stepped.effects.map(e => e.type), ['watch', 'log']);
    assert.equal((stepped.effects[1] as {message: string}).message, 'discovery: /binlog/mysql-bin.000042 is written on /m2592 (/dev/x2592, ext4, 259:2): watching it in /srv/binlog');
    life = stepped.life;
    // Seen again: nothing to do.
    assert.deepEqual(discoveryStep(life, {type: 'scanned', volumes: [volume], processes: 1, what: 'pid 812'}).effects, []);
    for (const n of [1, 2]) {
      stepped = discoveryStep(life, {type: 'scanned', volumes: [], processes: 1, what: 'pid 812'});
      assert.deepEqual(stepped.effects, [], `missing ${n} scan(s): still watched`);
      life = stepped.life;
    }
    stepped = discoveryStep(life, {type: 'scanned', volumes: [], processes: 1, what: 'pid 812'});
    assert.deepEqual(stepped.effects[0], {type: 'unwatch', device: '259:2', path: '/srv/binlog'});
    assert.equal((stepped.effects[1] as {message: string}).message, 'discovery: /m2592 (/dev/x2592, ext4, 259:2) no longer written by pid 812 (3 scans): no longer watched');
  });

  it('a failed scan concludes nothing, and says so once', () => {
    let life = initialDiscovery(watchConfig);
    life = discoveryStep(life, {type: 'scanned', volumes: [found('259:2', '/b', true)], processes: 1, what: 'x'}).life;
    life = discoveryStep(life, {type: 'pinned', device: '259:2', path: '/srv/binlog'}).life;
    let stepped = discoveryStep(life, {type: 'scan-failed', reason: 'a scan took longer than 3.0 s'});
    assert.deepEqual(stepped.effects, [{type: 'log', level: 'warn', message: 'discovery: a scan took longer than 3.0 s; the watched volumes stay as they are', fields: {}}]);
    for (let i = 0; i < 5; i++) {
      stepped = discoveryStep(stepped.life, {type: 'scan-failed', reason: 'a scan took longer than 3.0 s'});
      assert.deepEqual(stepped.effects, []);
    }
    assert.equal(stepped.life.volumes.get('259:2')?.state.kind, 'watched');
  });

  it('past the limit, and where the volume is not mounted here, names the file not watched', () => {
    const life = initialDiscovery({...watchConfig, maxPaths: 1});
    const stepped = discoveryStep(life, {type: 'scanned', volumes: [found('259:1', '/var/lib/mysql/ibdata1', true), found('259:2', '/binlog/b.1', true), found('259:9', '/other/f', false)], processes: 1, what: 'x'});
    const unwatched = stepped.effects.find(e => e.type === 'unwatched');
    assert.deepEqual(unwatched, {type: 'unwatched', list: [
      {file: '/binlog/b.1', device: '259:2', source: '/dev/x2592', why: 'over the limit of 1 watched paths'},
      {file: '/other/f', device: '259:9', source: '/dev/x2599', why: 'not mounted in the reporter\'s mount namespace'},
    ]});
    assert.deepEqual(stepped.effects.filter(e => e.type === 'log').map(e => (e as {message: string}).message), [
      '/binlog/b.1 on /dev/x2592, not watched: over the limit of 1 watched paths',
      '/other/f on /dev/x2599, not watched: not mounted in the reporter\'s mount namespace',
    ]);
    // The same again: said once.
    assert.deepEqual(discoveryStep(stepped.life, {type: 'scanned', volumes: [found('259:1', '/var/lib/mysql/ibdata1', true), found('259:2', '/binlog/b.1', true), found('259:9', '/other/f', false)], processes: 1, what: 'x'}).effects, []);
  });

  it('a mount root that cannot be pinned: named once, tried again at each scan, watched once it is pinned', () => {
    const volume = found('259:2', '/binlog/b.1', true);
    const scan = {type: 'scanned' as const, volumes: [volume], processes: 1, what: 'x'};
    let stepped = discoveryStep(discoveryStep(initialDiscovery(watchConfig), scan).life, {type: 'pin-failed', device: '259:2', why: 'no answer within 3.0 s (does the disk hang?)'});
    assert.deepEqual(stepped.effects.map(e => (e.type === 'log' ? e.message : e.type)), ['unwatched', '/binlog/b.1 on /dev/x2592, not watched: cannot probe at the root of its mount: no answer within 3.0 s (does the disk hang?)']);
    stepped = discoveryStep(stepped.life, scan);
    assert.deepEqual(stepped.effects, [{type: 'pin', device: '259:2', path: '/srv/binlog', volume}], 'tried again, nothing said again');
    stepped = discoveryStep(stepped.life, {type: 'pin-failed', device: '259:2', why: 'no answer within 3.0 s (does the disk hang?)'});
    assert.deepEqual(stepped.effects, []);
    stepped = discoveryStep(discoveryStep(stepped.life, scan).life, {type: 'pinned', device: '259:2', path: '/srv/binlog'});
    assert.deepEqual(stepped.effects.map(e => e.type), ['watch', 'log', 'unwatched']);
    assert.deepEqual(stepped.effects[2], {type: 'unwatched', list: []});
  });

  it('with --monitor paths, watches nothing itself and names each written volume no --monitor is on', () => {
    const life = initialDiscovery({mode: 'warn', graceScans: 3, maxPaths: 8, covered: new Set(['259:1'])});
    const stepped = discoveryStep(life, {type: 'scanned', volumes: [found('259:1', '/var/lib/mysql/ibdata1', true), found('259:2', '/binlog/mysql-bin.000042', true)], processes: 1, what: 'x'});
    assert.deepEqual(stepped.effects, [
      {type: 'unwatched', list: [{file: '/binlog/mysql-bin.000042', device: '259:2', source: '/dev/x2592', why: 'no --monitor is on it'}]},
      {type: 'log', level: 'warn', message: '/binlog/mysql-bin.000042 on /dev/x2592, not watched: no --monitor is on it', fields: {device: '259:2', file: '/binlog/mysql-bin.000042'}},
    ]);
    // Gone from the service for the grace scans: the list empties, said once.
    let next = stepped.life;
    const empties = [];
    for (let i = 0; i < 3; i++) {
      const s = discoveryStep(next, {type: 'scanned', volumes: [found('259:1', '/var/lib/mysql/ibdata1', true)], processes: 1, what: 'x'});
      empties.push(...s.effects);
      next = s.life;
    }
    assert.deepEqual(empties, [{type: 'unwatched', list: []}]);
  });
});

describe('the scanner itself (real perl, this machine\'s /proc)', () => {
  it('finds a file a child holds open for writing and not one it only reads', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ebsmon-scan-'));
    const script = path.join(dir, 'scan.pl');
    fs.writeFileSync(script, SCAN_SCRIPT);
    fs.writeFileSync(path.join(dir, 'read-only'), 'x');
    // A parent (sh) whose child (sleep) holds the files: descendants are scanned too.
    const holder = spawn('sh', ['-c', `exec 4<"${dir}/read-only"; sleep 30 5>>"${dir}/written file" & wait`], {stdio: 'ignore', detached: true});
    try {
      let report = parseScan('');
      for (let i = 0; i < 50 && !report.written.some(w => w.file.endsWith('written file')); i++) {
        await new Promise(resolve => setTimeout(resolve, 100));
        report = parseScan(spawnSync('perl', [script, 'pid', String(holder.pid)], {encoding: 'utf8'}).stdout);
      }
      assert.equal(report.complete, true);
      assert.ok(report.processes.length >= 2, 'the shell and its sleep');
      const files = report.written.map(w => w.file);
      assert.ok(files.includes(`${dir}/written file`), files.join(', '));
      assert.ok(!files.includes(`${dir}/read-only`));
      const pidFile = path.join(dir, 'pid');
      fs.writeFileSync(pidFile, `${holder.pid}\n`);
      const viaFile = parseScan(spawnSync('perl', [script, 'pidfile', pidFile], {encoding: 'utf8'}).stdout);
      assert.ok(viaFile.written.some(w => w.file === `${dir}/written file`));
      const none = parseScan(spawnSync('perl', [script, 'pidfile', path.join(dir, 'missing')], {encoding: 'utf8'}).stdout);
      assert.deepEqual([none.complete, none.processes.length], [true, 0]);
    } finally {
      // Its own process group: the shell and its sleep.
      process.kill(-holder.pid!, 'SIGKILL');
      fs.rmSync(dir, {recursive: true, force: true});
    }
  });
});
