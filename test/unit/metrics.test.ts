import assert from 'node:assert/strict';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {emptyRejections, renderMetrics, renderNagios, renderTable, statusView} from '../../src/state';
import type {ReporterSnapshot, Snapshot} from '../../src/state';
import {promtoolProblems, sampleOf} from '../helpers/metrics';
import {inCI} from '../helpers/rig';

const now = 1_800_000_000_000;
const base: ReporterSnapshot = {
  name: 'mysql', pid: 4242, ports: [3306], state: 'healthy', lastHeartbeatAt: now - 500, fencedSince: null, overriddenAt: null, overriddenBy: null, deadlineAt: now + 9500,
  fenceCount: 2, flapCount: 2, heartbeats: 1000, lastProbeMs: 2.5, interval: 1, probeTimeout: 3, reason: '2 consecutive heartbeats',
};
const snapshot: Snapshot = {
  v: 1,
  monitor: {pid: 1, startedAt: now - 60_000, writtenAt: now, timeout: 10, recover: 3, protectPorts: [22], heartbeats: 1000, linesRejected: emptyRejections(), firewallOk: true, firewall: 'nftables', deadlinesInKernel: true},
  reporters: [
    {...base, fenceDurations: {count: 2, sumSeconds: 94.5, lastSeconds: 91, buckets: [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]}, devicesAt: now - 2000,
      devices: [{device: '259:1', name: 'nvme1n1', inflight: 14, ios: 123456, windowMs: 1000, done: 0, busyMs: 1000, quietMs: 4000}, {device: '259:2', name: 'nvme2n1', inflight: 1, ios: 99, windowMs: 1000, done: 40, busyMs: 250, awaitMs: 2.5, quietMs: 0}]},
    {...base, name: 'www', fenceCount: 0, flapCount: 0},
  ],
};

describe('metrics.prom: devices and fence durations', () => {
  const text = renderMetrics(snapshot, now);

  it('exports each watched device\'s in-flight requests, completions, await, utilisation and quiet time', () => {
    const labels = 'reporter="mysql",device="259:1",name="nvme1n1"';
    assert.equal(sampleOf(text, `ebsmon_device_inflight_requests{${labels}}`), 14);
    assert.equal(sampleOf(text, `ebsmon_device_ios_completed_total{${labels}}`), 123456);
    assert.ok(Number.isNaN(sampleOf(text, `ebsmon_device_await_seconds{${labels}}`)), 'no await without completions');
    assert.equal(sampleOf(text, 'ebsmon_device_await_seconds{reporter="mysql",device="259:2",name="nvme2n1"}'), 0.0025);
    assert.equal(sampleOf(text, `ebsmon_device_utilization_ratio{${labels}}`), 1);
    assert.equal(sampleOf(text, `ebsmon_device_last_completion_age_seconds{${labels}}`), 4);
    assert.equal(sampleOf(text, `ebsmon_device_sample_age_seconds{${labels}}`), 2);
    assert.doesNotMatch(text, /ebsmon_device_\w+\{reporter="www"/, 'a reporter without devices has no device series');
  });

  it('fence durations as a cumulative histogram, only for reporters with an ended fence, and the last one', () => {
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_bucket{reporter="mysql",le="1"}'), 0);
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_bucket{reporter="mysql",le="5"}'), 1);
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_bucket{reporter="mysql",le="300"}'), 2);
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_bucket{reporter="mysql",le="+Inf"}'), 2);
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_sum{reporter="mysql"}'), 94.5);
    assert.equal(sampleOf(text, 'ebsmon_reporter_fence_duration_seconds_count{reporter="mysql"}'), 2);
    assert.equal(sampleOf(text, 'ebsmon_reporter_last_fence_duration_seconds{reporter="mysql"}'), 91);
    assert.doesNotMatch(text, /fence_duration_seconds\w*\{reporter="www"/);
  });

  it('a fenced reporter: what it waits for, and whether its host is cut from its coordinator; status and Nagios say the same', () => {
    const fenced = (name: string, rejoin: ReporterSnapshot['rejoin'], isolate?: Array<number>): ReporterSnapshot => ({...base, name, state: 'fenced', fencedSince: now - 30_000, deadlineAt: null, rejoin, ...(isolate === undefined ? {} : {isolate})});
    const view = {...snapshot, reporters: [
      fenced('pg', {mode: 'program', stage: 'voice', waiting: 'program', reason: 'replica, not streaming yet'}, [2379]),
      fenced('db', {mode: 'manual', stage: 'fenced', waiting: 'operator'}, [2379]),
      fenced('web', {mode: 'auto', stage: 'fenced', waiting: 'disks'}),
    ]};
    const out = renderMetrics(view, now);
    assert.deepEqual(['disks', 'operator', 'program'].map(what => sampleOf(out, `ebsmon_reporter_waiting{reporter="pg",for="${what}"}`)), [0, 0, 1]);
    assert.deepEqual(['disks', 'operator', 'program'].map(what => sampleOf(out, `ebsmon_reporter_waiting{reporter="db",for="${what}"}`)), [0, 1, 0]);
    assert.equal(sampleOf(out, 'ebsmon_reporter_isolated{reporter="pg"}'), 0, 'its voice given back');
    assert.equal(sampleOf(out, 'ebsmon_reporter_isolated{reporter="db"}'), 1);
    assert.doesNotMatch(out, /ebsmon_reporter_isolated\{reporter="web"/, 'no isolate ports: no series');
    assert.doesNotMatch(renderMetrics(snapshot, now), /ebsmon_reporter_waiting\{/, 'healthy reporters wait for nothing');
    assert.equal(promtoolProblems(out) ?? null, null);

    const table = renderTable(statusView(view, now));
    assert.match(table, /\n {2}rejoin: coordinator reachable again, clients still fenced: replica, not streaming yet\n/);
    assert.match(table, /\n {2}rejoin: its disks answer again; fenced, waiting for an operator \(ebsmon unblock --reporter=db\)\n/);
    assert.equal(renderNagios(statusView(view, now)).code, 2, 'one still waiting for its disks: critical');
    const onlyOperator = renderNagios(statusView({...view, reporters: [view.reporters[1]!]}, now));
    assert.equal(onlyOperator.code, 1);
    assert.match(onlyOperator.line, /^WARNING: 1 reporter fenced, waiting for an operator \(db\): the disks answer again; ebsmon unblock lifts it, monitor pulse 0\.0s ago \| reporters=1 fenced=1 overridden=0 /);
  });

  it('a volume the service writes to that nothing watches: in metrics, under the reporter in status, and a Nagios WARNING', () => {
    const view = {...snapshot, reporters: [{...base, unwatched: [{file: '/binlog/mysql-bin.000042', device: '7:3', source: '/dev/loop3'}]}, {...base, name: 'www'}]};
    const out = renderMetrics(view, now);
    assert.equal(sampleOf(out, 'ebsmon_reporter_unwatched_info{reporter="mysql",file="/binlog/mysql-bin.000042",device="7:3",source="/dev/loop3"}'), 1);
    assert.doesNotMatch(out, /ebsmon_reporter_unwatched_info\{reporter="www"/);
    assert.equal(promtoolProblems(out) ?? null, null);
    assert.match(renderTable(statusView(view, now)), /\nmysql .*\n {2}\/binlog\/mysql-bin\.000042 on \/dev\/loop3 \(7:3\), not watched\nwww /);
    const nagios = renderNagios(statusView(view, now));
    assert.equal(nagios.code, 1);
    assert.match(nagios.line, /^WARNING: a volume written but not watched: mysql: \/binlog\/mysql-bin\.000042 on \/dev\/loop3 \(7:3\), not watched, monitor pulse 0\.0s ago \| reporters=2 /);
    assert.equal(renderNagios(statusView(snapshot, now)).code, 0, 'none: OK');
  });

  it('is clean for promtool check metrics', (t: TestContext) => {
    const problems = promtoolProblems(text);
    if (problems === undefined && !inCI)
      return t.skip('promtool is not installed (make test installs it)');
    assert.equal(problems, null);
  });
});
