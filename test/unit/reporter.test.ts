import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {PATH_FIELD_MAX, isPathInfo} from '../../src/heartbeat';
import {parseMountinfo} from '../../src/mounts';
import type {DeviceSample, PathPin} from '../../src/probe';
import {composeReason, describeCheck, describeProbe, pathInfo} from '../../src/reporter';

const pin = (given: string, line: string): PathPin => {
  const mount = parseMountinfo(line)[0]!;
  return {path: given, dir: given, mount, dev: 0n, ino: 0n, device: mount.device, warnings: [], unmounted: []};
};

describe('pathInfo (the heartbeat\'s paths field)', () => {
  it('carries the mount as pinned', () => {
    assert.deepEqual(pathInfo(pin('/var/lib/mysql', '30 22 259:1 / /var/lib/mysql rw - ext4 /dev/nvme1n1 rw')),
      {path: '/var/lib/mysql', device: '259:1', source: '/dev/nvme1n1', fstype: 'ext4', mountPoint: '/var/lib/mysql'});
  });

  it('keeps the end of a long path, and never sends an empty field (the monitor would drop the heartbeat)', () => {
    const long = `/data/${'x'.repeat(300)}/mysql`;
    const info = pathInfo(pin(long, `30 22 0:50 / ${long} rw - tmpfs  rw`));
    assert.equal(info.path.length, PATH_FIELD_MAX.path);
    assert.ok(info.path.startsWith('\u2026') && info.path.endsWith('x/mysql'));
    assert.equal(info.source, '-');
    assert.ok(isPathInfo(info));
  });
});

describe('a failing probe or check in words (the reason the monitor and the log carry)', () => {
  const at = (ms: number, fields: Partial<DeviceSample> = {}): DeviceSample => ({reads: 100, writes: 200, others: 0, ticks: 0, ioTicks: 0, inflightReads: 0, inflightWrites: 0, at: ms, ...fields});
  const fail = (code: string, reason: string) => ({ok: false as const, code, reason, ms: 1});
  const stuck = {name: 'nvme1n1', from: at(0), to: at(3000, {inflightWrites: 14}), progressAt: -1000};

  it('a timeout with what the device did meanwhile', () => {
    const finding = describeProbe('/var/lib/mysql', fail('ETIMEDOUT', 'timed out after 3.0 s'), stuck);
    assert.equal(composeReason([finding]), 'probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s');
    assert.equal(finding.key, 'probe of /var/lib/mysql timed out after 3.0 s|stuck');
    const later = describeProbe('/var/lib/mysql', fail('ETIMEDOUT', 'timed out after 3.0 s'), {...stuck, to: at(9000, {inflightWrites: 14})});
    assert.equal(later.key, finding.key, 'the same verdict with newer numbers is the same finding');
  });

  it('an I/O error with the device\'s facts; a full volume says what frees it; a mount problem and no device say nothing of a device', () => {
    assert.equal(composeReason([describeProbe('/data', fail('EIO', 'write: EIO: input/output error'), {...stuck, to: at(1000, {writes: 201})})]), 'probe of /data failed: write: EIO: input/output error; nvme1n1 answered with an error: 0 requests in flight, 1 completed in the last 1.0 s');
    assert.equal(composeReason([describeProbe('/data', fail('ENOSPC', 'write: ENOSPC: no space left on device'), stuck)]), 'probe of /data failed: write: ENOSPC: no space left on device (the volume is full and the probe file has no block of its own yet; free some space)');
    assert.equal(composeReason([describeProbe('/data', fail('EMOUNTGONE', 'mount gone: /dev/x (7:1) is no longer mounted at /data; ...'), stuck)]), 'probe of /data: mount gone: /dev/x (7:1) is no longer mounted at /data; ...');
    assert.equal(composeReason([describeProbe('/data', fail('ETIMEDOUT', 'timed out after 3.0 s'), null)]), 'probe of /data timed out after 3.0 s');
    assert.equal(composeReason([describeProbe('/data', fail('ENOSTART', 'timed out after 3.0 s before perl started (its exec is stuck)'), null)]), 'probe of /data timed out after 3.0 s before perl started (its exec is stuck)');
  });

  it('several findings in one reason, a check\'s keyed by what happened, not by its output', () => {
    const check = (output: string) => describeCheck('mysqladmin ping', {ok: false, ms: 2, code: 'EXIT', status: 'exit 1', reason: `check \`mysqladmin ping\` exited 1: ${output}`});
    assert.equal(check('at 10:00').key, check('at 10:01').key);
    assert.equal(composeReason([describeProbe('/a', fail('EROFS', 'open: EROFS: read-only file system'), null), check('down')]), 'probe of /a failed: open: EROFS: read-only file system; check `mysqladmin ping` exited 1: down');
  });
});
