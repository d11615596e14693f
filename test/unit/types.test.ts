import assert from 'node:assert/strict';
import {it} from 'node:test';

import type {DeviceStats, Failing, Goodbye, Heartbeat, Unblock} from '../../src/heartbeat';
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
// A device's counters: await only when something completed.
const disk: DeviceStats = {device: '7:0', name: 'loop0', inflight: 0, ios: 0, windowMs: 1000, done: 0, busyMs: 0, quietMs: 0};
const withDevices: Heartbeat = {...beat, devices: [disk, {...disk, done: 3, awaitMs: 1.5}]};
// @ts-expect-error await is milliseconds, a number
const badAwait: DeviceStats = {...disk, awaitMs: 'slow'};
const word: Failing = {v: 1, kind: 'failing', name: 'a', pid: 1, sentAt: 0, reason: 'probe of /data timed out after 3.0 s'};
// @ts-expect-error a failing word asks for nothing: no ports
const wordWithPorts: Failing = {...word, ports: [1]};
// @ts-expect-error a history entry's state is a reporter state
const badHistory: NonNullable<Snapshot['reporters'][number]['history']>[number] = {at: 0, from: 'healthy', state: 'gone', previousSeconds: null, reason: ''};

it('keeps the derived types honest', () => {
  assert.ok([beat, withPaths, noDevice, noPorts, wrongKind, noUser, badState, withDevices, badAwait, word, wordWithPorts, badHistory].length === 12);
});
