import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {it} from 'node:test';

import type {DeviceStats, Failing, Goodbye, Heartbeat, Unblock} from '../../src/heartbeat';
import type {Snapshot} from '../../src/state';
import {ROOT} from '../helpers/rig';

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

// Used, so that noUnusedLocals does not flag them: what checks them is tsc, below.
void [beat, withPaths, noDevice, noPorts, wrongKind, noUser, badState, withDevices, badAwait, word, wordWithPorts, badHistory];

it('keeps the derived types honest: tsc finds every line above right, and every @ts-expect-error an error', () => {
  // These checks are made by the compiler, not at run time: run it on this file (and what it imports)
  // with the project's settings. An unused @ts-expect-error is an error too (TS2578).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ebsmon-types-'));
  try {
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      extends: path.join(ROOT, 'tsconfig.json'),
      compilerOptions: {typeRoots: [path.join(ROOT, 'node_modules', '@types')]},
      include: [],
      files: [__filename],
    }));
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', dir], {encoding: 'utf8', timeout: 120_000});
    assert.equal(tsc.error, undefined);
    assert.equal(`${tsc.stdout}${tsc.stderr}`, '');
    assert.equal(tsc.status, 0);
  } finally {
    fs.rmSync(dir, {recursive: true, force: true});
  }
});
