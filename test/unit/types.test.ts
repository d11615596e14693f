import assert from 'node:assert/strict';
import {it} from 'node:test';

import type {Goodbye, Heartbeat, Unblock} from '../../src/heartbeat';
import type {Snapshot} from '../../src/state';

// Compile-time checks (tsc --noEmit): the types are derived from the schemas.
const beat: Heartbeat = {v: 1, kind: 'heartbeat', name: 'a', pid: 1, ports: [1], interval: 1, probeTimeout: 1, seq: 0, sentAt: 0, probeMs: 0};
// The watched paths are optional (older reporters do not send them), but typed when present.
const withPaths: Heartbeat = {...beat, paths: [{path: '/var/lib/mysql', device: '259:1', source: '/dev/nvme1n1', fstype: 'ext4', mountPoint: '/var/lib/mysql'}]};
// @ts-expect-error a path names its device
const noDevice: Heartbeat = {...beat, paths: [{path: '/var/lib/mysql', source: '/dev/nvme1n1', fstype: 'ext4', mountPoint: '/var/lib/mysql'}]};
// @ts-expect-error a heartbeat needs its ports
const noPorts: Heartbeat = {v: 1, kind: 'heartbeat', name: 'a', pid: 1, interval: 1, probeTimeout: 1, seq: 0, sentAt: 0, probeMs: 0};
// @ts-expect-error the kind is a literal
const wrongKind: Goodbye = {v: 1, kind: 'heartbeat', name: 'a', pid: 1};
// @ts-expect-error an unblock names a reporter or all, with a user
const noUser: Unblock = {v: 1, kind: 'unblock', all: true, pid: 1};
// @ts-expect-error a reporter state is one of three words
const badState: Snapshot['reporters'][number]['state'] = 'dead';

it('keeps the derived types honest', () => {
  assert.ok([beat, withPaths, noDevice, noPorts, wrongKind, noUser, badState].length === 7);
});
