import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {PATH_FIELD_MAX, isPathInfo} from '../../src/heartbeat';
import {parseMountinfo} from '../../src/probe';
import type {PathPin} from '../../src/probe';
import {pathInfo} from '../../src/reporter';

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
