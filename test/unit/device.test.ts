import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {isDeviceStats} from '../../src/heartbeat';
import {parseMountinfo} from '../../src/mounts';
import {DeviceWatch, deviceNode, diagnose, parseStat, resolveDevice, statsOf, windowOf} from '../../src/probe';
import type {DeviceSample, Window} from '../../src/probe';

// Documentation/block/stat.rst: reads ios merges sectors ticks, writes ..., in_flight io_ticks time_in_queue, discards ..., flushes ios ticks.
const STAT17 = '    6887       31   205672   221832    23977    22329  1411178   497140        3    83180   727487        5        0        0       40    11974     8514\n';

describe('sysfs block device counters', () => {
  it('reads the 17 fields of stat and the reads/writes of inflight', () => {
    assert.deepEqual(parseStat(STAT17, '       1        2\n'), {reads: 6887, writes: 23977, others: 5 + 11974, ticks: 221832 + 497140 + 40 + 8514, ioTicks: 83180, inflightReads: 1, inflightWrites: 2});
  });

  it('reads the 11 fields of kernels before discards, taking in_flight from stat when inflight is missing', () => {
    assert.deepEqual(parseStat('1 0 8 2 3 0 24 6 4 10 12', ''), {reads: 1, writes: 3, others: 0, ticks: 8, ioTicks: 10, inflightReads: 4, inflightWrites: 0});
  });

  it('refuses what is not a stat line', () => {
    assert.equal(parseStat('', ''), null);
    assert.equal(parseStat('1 2 3', ''), null);
    assert.equal(parseStat('a b c d e f g h i j k', ''), null);
  });
});

const sample = (at: number, fields: Partial<DeviceSample> = {}): DeviceSample => ({reads: 0, writes: 0, others: 0, ticks: 0, ioTicks: 0, inflightReads: 0, inflightWrites: 0, at, ...fields});
const win = (fields: Partial<Window>): Window => ({name: 'nvme1n1', ms: 3000, inflight: 0, inflightWrites: 0, done: 0, doneReads: 0, doneWrites: 0, awaitMs: null, busyPercent: 0, quietMs: 4000, ...fields});

describe('what the device was doing: its diagnosis in words', () => {
  const table: Array<[string, Window, 'timeout' | 'error', string, string]> = [
    ['requests in flight, none completed: stuck', win({inflight: 14, inflightWrites: 14}), 'timeout', 'stuck', 'nvme1n1: 14 requests in flight, none completed for 4.0 s'],
    ['one request in flight', win({inflight: 1, quietMs: 600}), 'timeout', 'stuck', 'nvme1n1: 1 request in flight, none completed for 0.6 s'],
    ['completions at the window\'s start only, then requests in flight: stuck', win({inflight: 2, done: 5, doneWrites: 5, awaitMs: 1, quietMs: 2500}), 'timeout', 'stuck', 'nvme1n1: 2 requests in flight, none completed for 2.5 s'],
    ['nothing in flight, nothing completed: held above the device', win({}), 'timeout', 'idle', 'nvme1n1 idle: no requests in flight, none completed for 4.0 s: the filesystem is blocking writes above the device (frozen?)'],
    ['a freeze\'s own writes at the start, then quiet: idle', win({done: 2, doneWrites: 2, awaitMs: 0.5, quietMs: 2900}), 'timeout', 'idle', 'nvme1n1 idle: no requests in flight, none completed for 2.9 s: the filesystem is blocking writes above the device (frozen?)'],
    ['reads complete quickly, no write in flight or completed: a frozen filesystem serving reads', win({done: 30, doneReads: 30, awaitMs: 0.4, busyPercent: 3, quietMs: 0}), 'timeout', 'writes-held', 'nvme1n1 answers reads (30 I/Os completed in the last 3.0 s, await 0.4 ms, 3% utilised) but no write reached it: the filesystem is blocking writes above the device (frozen?)'],
    ['completions with a long await: saturated', win({inflight: 31, inflightWrites: 31, done: 2140, doneWrites: 2140, awaitMs: 1900, busyPercent: 100, quietMs: 0}), 'timeout', 'busy', 'nvme1n1 busy: 2140 I/Os completed in the last 3.0 s, await 1.9 s, 100% utilised (saturated, not hung)'],
    ['fully utilised with short awaits: saturated', win({inflight: 4, inflightWrites: 4, done: 90000, doneWrites: 90000, awaitMs: 2.5, busyPercent: 97, quietMs: 0}), 'timeout', 'busy', 'nvme1n1 busy: 90000 I/Os completed in the last 3.0 s, await 2.5 ms, 97% utilised (saturated, not hung)'],
    ['writes complete quickly and the device is mostly idle: the probe is held above it', win({done: 3, doneWrites: 3, awaitMs: 12.34, busyPercent: 2, quietMs: 0}), 'timeout', 'answering', 'nvme1n1 answers: 3 I/Os completed in the last 3.0 s, await 12 ms, 2% utilised; the probe is held up above the device'],
    ['after an I/O error only the facts', win({done: 2, doneWrites: 1, doneReads: 1}), 'error', 'errors', 'nvme1n1 answered with an error: 0 requests in flight, 2 completed in the last 3.0 s'],
  ];
  for (const [name, window, failure, expected, text] of table) {
    it(name, () => {
      assert.deepEqual(diagnose(window, failure), {diagnosis: expected, text});
    });
  }

  it('a window from two samples: completions, reads and writes, await, utilisation, quiet time', () => {
    const from = sample(1000, {reads: 10, writes: 20, others: 1, ticks: 100, ioTicks: 50});
    const to = sample(3000, {reads: 12, writes: 28, others: 1, ticks: 150, ioTicks: 1050, inflightWrites: 3});
    assert.deepEqual(windowOf('loop3', from, to, 2500), {name: 'loop3', ms: 2000, inflight: 3, inflightWrites: 3, done: 10, doneReads: 2, doneWrites: 8, awaitMs: 5, busyPercent: 50, quietMs: 500});
    const stats = statsOf({device: '7:3', name: 'loop3'}, from, to, 2500);
    assert.deepEqual(stats, {device: '7:3', name: 'loop3', inflight: 3, ios: 41, windowMs: 2000, done: 10, busyMs: 1000, quietMs: 500, awaitMs: 5});
    assert.ok(isDeviceStats(stats));
    assert.equal(statsOf({device: '7:3', name: 'loop3'}, to, to, 0).awaitMs, undefined, 'no await without completions');
  });
});

describe('finding a mount\'s device node in sysfs', () => {
  let sys: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    ({path: sys, cleanup} = await tmpDir({unsafeCleanup: true}));
    // A fake /sys: devices with their attributes, and /sys/dev/block links to them, as the kernel lays them out.
    const devices = path.join(sys, 'devices');
    const make = (rel: string, files: Record<string, string>) => {
      fs.mkdirSync(path.join(devices, rel), {recursive: true});
      for (const [name, content] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(devices, rel, name)), {recursive: true});
        fs.writeFileSync(path.join(devices, rel, name), content);
      }
    };
    make('pci/nvme/nvme1n1', {stat: STAT17, inflight: '0 0\n'});
    make('pci/nvme/nvme1n1/nvme1n1p2', {stat: STAT17, inflight: '0 0\n', partition: '2\n'});
    make('virtual/block/loop3', {stat: STAT17, inflight: '0 0\n', 'loop/backing_file': '/srv/disk.img\n'});
    make('virtual/block/dm-0', {stat: STAT17, inflight: '0 0\n', 'dm/name': 'vg-data\n', 'slaves/nvme1n1p2': ''});
    const links = path.join(sys, 'dev', 'block');
    fs.mkdirSync(links, {recursive: true});
    for (const [device, rel] of [['259:0', 'pci/nvme/nvme1n1'], ['259:2', 'pci/nvme/nvme1n1/nvme1n1p2'], ['7:3', 'virtual/block/loop3'], ['253:0', 'virtual/block/dm-0']])
      fs.symlinkSync(path.join(devices, rel!), path.join(links, device!));
  });

  after(async () => {
    await cleanup();
  });

  const mount = (device: string, fstype: string, source: string) => parseMountinfo(`30 22 ${device} / /data rw - ${fstype} ${source} rw`)[0]!;
  const links = () => path.join(sys, 'dev', 'block');

  it('a whole disk, a partition (its own counters), a loop device and a dm device, each named as the kernel names it', () => {
    assert.deepEqual(deviceNode('259:0', links()), {device: '259:0', name: 'nvme1n1', detail: '', dir: path.join(sys, 'devices/pci/nvme/nvme1n1')});
    assert.equal(deviceNode('259:2', links())?.detail, 'partition 2 of nvme1n1; its own counters');
    assert.equal(deviceNode('7:3', links())?.detail, 'loop device backed by /srv/disk.img');
    assert.deepEqual(deviceNode('253:0', links()) && {name: deviceNode('253:0', links())!.name, detail: deviceNode('253:0', links())!.detail}, {name: 'dm-0', detail: 'device-mapper vg-data; on nvme1n1p2'});
  });

  it('the superblock\'s device first; an anonymous one (btrfs) through the block device its source names; none for tmpfs', () => {
    const resolved = resolveDevice(mount('259:2', 'ext4', '/dev/nvme1n1p2'), '259:2', links());
    assert.equal(resolved.node?.name, 'nvme1n1p2');
    const blockDevice = {isBlockDevice: () => true, rdev: (259 << 8) | 0} as unknown as fs.Stats;
    const btrfs = resolveDevice(mount('0:45', 'btrfs', '/dev/nvme1n1'), '0:46', links(), file => (file === '/dev/nvme1n1' ? blockDevice : null));
    assert.deepEqual(btrfs.node === null ? btrfs : {name: btrfs.node.name, via: btrfs.via}, {name: 'nvme1n1', via: '/dev/nvme1n1'});
    const tmpfs = resolveDevice(mount('0:50', 'tmpfs', 'tmpfs'), '0:50', links());
    assert.deepEqual(tmpfs, {node: null, why: `tmpfs on tmpfs (0:50) has no block device in ${links()}`});
  });

  it('reads the counters again on each sample through the descriptor it opened, and tracks when completions last moved', () => {
    const node = deviceNode('7:3', links())!;
    const watch = new DeviceWatch(node);
    try {
      assert.equal(watch.tick(1000)?.reads, 6887);
      fs.writeFileSync(path.join(node.dir, 'stat'), STAT17.replace('6887', '6890'));
      fs.writeFileSync(path.join(node.dir, 'inflight'), '0 4\n');
      const later = watch.tick(2000)!;
      assert.deepEqual([later.reads, later.inflightWrites], [6890, 4]);
      assert.equal(watch.latest?.done, 3);
      assert.equal(watch.latest?.windowMs, 1000);
      watch.tick(3500);
      assert.equal(watch.quietSince(), 2000, 'no completion since the sample at 2000');
      assert.deepEqual([watch.latest?.done, watch.latest?.quietMs, watch.latest?.inflight], [0, 1500, 4]);
      assert.equal(watch.lookback()?.at, 1000, 'an error looks back over the ticks of the last 5 s');
      watch.tick(7000);
      assert.equal(watch.lookback()?.at, 2000, 'older ticks are dropped');
    } finally {
      watch.close();
    }
  });
});
