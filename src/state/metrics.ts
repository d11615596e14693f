import {FENCE_BUCKETS, REPORTER_STATES} from './snapshot';
import type {DeviceStats} from '../heartbeat/schema';
import type {ReporterSnapshot, Snapshot} from './snapshot';

const WAITING = ['disks', 'operator', 'program'] as const;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function value(n: number): string {
  return Number.isFinite(n) ? String(n) : 'NaN';
}

type PerReporter = {name: string, type: 'gauge' | 'counter', help: string, value: (r: ReporterSnapshot, now: number) => number};

const PER_REPORTER: ReadonlyArray<PerReporter> = [
  {name: 'ebsmon_reporter_last_heartbeat_age_seconds', type: 'gauge', help: 'Seconds since the reporter\'s last accepted heartbeat.',
    value: (r, now) => (r.lastHeartbeatAt === null ? NaN : Math.max(0, (now - r.lastHeartbeatAt) / 1000))},
  {name: 'ebsmon_reporter_deadline_seconds', type: 'gauge', help: 'Seconds until the reporter is fenced if no heartbeat comes (NaN unless healthy).',
    value: (r, now) => (r.deadlineAt === undefined || r.deadlineAt === null ? NaN : Math.max(0, (r.deadlineAt - now) / 1000))},
  {name: 'ebsmon_reporter_probe_latency_seconds', type: 'gauge', help: 'Latency of the probe behind the last heartbeat.',
    value: r => (r.lastProbeMs === null ? NaN : r.lastProbeMs / 1000)},
  {name: 'ebsmon_reporter_fences_total', type: 'counter', help: 'Times the reporter\'s ports were fenced.', value: r => r.fenceCount},
  {name: 'ebsmon_reporter_flaps_total', type: 'counter', help: 'Times a fence was lifted because heartbeats resumed.', value: r => r.flapCount},
];

type PerDevice = {name: string, type: 'gauge' | 'counter', help: string, value: (d: DeviceStats, r: ReporterSnapshot, now: number) => number};

/** From the reporter's last heartbeat or failing word: its watched devices' own sysfs counters. */
const PER_DEVICE: ReadonlyArray<PerDevice> = [
  {name: 'ebsmon_device_inflight_requests', type: 'gauge', help: 'Requests in flight on a watched device (sysfs inflight), as the reporter last sampled it.', value: d => d.inflight},
  {name: 'ebsmon_device_ios_completed_total', type: 'counter', help: 'I/Os the watched device has completed (reads, writes, discards, flushes; sysfs stat).', value: d => d.ios},
  {name: 'ebsmon_device_await_seconds', type: 'gauge', help: 'Average time per I/O completed in the reporter\'s last window (NaN when none completed).', value: d => (d.awaitMs === undefined ? NaN : d.awaitMs / 1000)},
  {name: 'ebsmon_device_utilization_ratio', type: 'gauge', help: 'Share of the reporter\'s last window the device had I/O in flight (io_ticks).', value: d => (d.windowMs > 0 ? Math.min(1, d.busyMs / d.windowMs) : NaN)},
  {name: 'ebsmon_device_last_completion_age_seconds', type: 'gauge', help: 'Seconds since the device\'s completion count last moved, as of the sample.', value: d => d.quietMs / 1000},
  {name: 'ebsmon_device_sample_age_seconds', type: 'gauge', help: 'Seconds since the reporter sampled these counters.', value: (_d, r, now) => (r.devicesAt === undefined ? NaN : Math.max(0, (now - r.devicesAt) / 1000))},
];

/**
 * Prometheus text exposition format 0.0.4, for node_exporter's textfile
 * collector. Rewritten every second with 1000 reporters: one string per line,
 * each reporter's label escaped once, no intermediate arrays of samples.
 */
export function renderMetrics(snapshot: Snapshot, now: number): string {
  const pieces: Array<string> = [];
  renderMetricsTo(snapshot, now, text => pieces.push(text));
  return pieces.join('');
}

/** The same, line by line into `emit` (the monitor writes them in chunks: see writeAtomicChunks). */
export function renderMetricsTo(snapshot: Snapshot, now: number, emit: (text: string) => void): void {
  const reporters = snapshot.reporters;
  const labels = reporters.map(r => `reporter="${escapeLabel(r.name)}"`);
  const head = (name: string, type: 'gauge' | 'counter' | 'histogram', help: string) => {
    emit(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`);
  };

  head('ebsmon_reporter_state', 'gauge', 'Reporter state: 1 for the state it is in, 0 for the others.');
  for (let i = 0; i < reporters.length; i++) {
    for (const state of REPORTER_STATES)
      emit(`ebsmon_reporter_state{${labels[i]!},state="${state}"} ${reporters[i]!.state === state ? 1 : 0}\n`);
  }
  for (const metric of PER_REPORTER) {
    head(metric.name, metric.type, metric.help);
    for (let i = 0; i < reporters.length; i++)
      emit(`${metric.name}{${labels[i]!}} ${value(metric.value(reporters[i]!, now))}\n`);
  }
  head('ebsmon_reporter_waiting', 'gauge', 'A fenced reporter: 1 for what it waits for before it takes clients again (disks: heartbeats up to --recover; operator: a manual rejoin, only unblock lifts it; program: its rejoin program), 0 for the others.');
  for (let i = 0; i < reporters.length; i++) {
    const waiting = reporters[i]!.state === 'fenced' ? reporters[i]!.rejoin?.waiting ?? 'disks' : null;
    if (waiting !== null)
      for (const what of WAITING)
        emit(`ebsmon_reporter_waiting{${labels[i]!},for="${what}"} ${waiting === what ? 1 : 0}\n`);
  }
  head('ebsmon_reporter_isolated', 'gauge', '1 while the reporter\'s host is cut from its isolate ports (fenced, its voice not given back), else 0.');
  for (let i = 0; i < reporters.length; i++) {
    const r = reporters[i]!;
    if ((r.isolate ?? []).length > 0)
      emit(`ebsmon_reporter_isolated{${labels[i]!}} ${r.state === 'fenced' && r.rejoin?.stage !== 'voice' ? 1 : 0}\n`);
  }
  head('ebsmon_reporter_path_info', 'gauge', 'A watched path and the device the reporter pinned it to (always 1).');
  for (let i = 0; i < reporters.length; i++)
    for (const p of reporters[i]!.paths ?? [])
      emit(`ebsmon_reporter_path_info{${labels[i]!},path="${escapeLabel(p.path)}",device="${escapeLabel(p.device)}",source="${escapeLabel(p.source)}",fstype="${escapeLabel(p.fstype)}",mount_point="${escapeLabel(p.mountPoint)}"} 1\n`);
  head('ebsmon_reporter_unwatched_info', 'gauge', 'A volume the reporter\'s service holds a file open for writing on that it does not watch, with that file (always 1; the reporter names at most 2).');
  for (let i = 0; i < reporters.length; i++)
    for (const u of reporters[i]!.unwatched ?? [])
      emit(`ebsmon_reporter_unwatched_info{${labels[i]!},file="${escapeLabel(u.file)}",device="${escapeLabel(u.device)}",source="${escapeLabel(u.source)}"} 1\n`);
  head('ebsmon_reporter_fence_duration_seconds', 'histogram', 'How long the reporter\'s fences lasted, for fences that ended (recovered or lifted by hand).');
  for (let i = 0; i < reporters.length; i++) {
    const fences = reporters[i]!.fenceDurations;
    if (fences === undefined)
      continue;
    let cumulative = 0;
    FENCE_BUCKETS.forEach((bound, b) => {
      cumulative += fences.buckets[b] ?? 0;
      emit(`ebsmon_reporter_fence_duration_seconds_bucket{${labels[i]!},le="${bound}"} ${cumulative}\n`);
    });
    emit(`ebsmon_reporter_fence_duration_seconds_bucket{${labels[i]!},le="+Inf"} ${fences.count}\n`);
    emit(`ebsmon_reporter_fence_duration_seconds_sum{${labels[i]!}} ${value(fences.sumSeconds)}\n`);
    emit(`ebsmon_reporter_fence_duration_seconds_count{${labels[i]!}} ${fences.count}\n`);
  }
  head('ebsmon_reporter_last_fence_duration_seconds', 'gauge', 'How long the reporter\'s last ended fence lasted.');
  for (let i = 0; i < reporters.length; i++) {
    const fences = reporters[i]!.fenceDurations;
    if (fences !== undefined)
      emit(`ebsmon_reporter_last_fence_duration_seconds{${labels[i]!}} ${value(fences.lastSeconds)}\n`);
  }
  for (const metric of PER_DEVICE) {
    head(metric.name, metric.type, metric.help);
    for (let i = 0; i < reporters.length; i++) {
      const r = reporters[i]!;
      for (const d of r.devices ?? [])
        emit(`${metric.name}{${labels[i]!},device="${escapeLabel(d.device)}",name="${escapeLabel(d.name)}"} ${value(metric.value(d, r, now))}\n`);
    }
  }
  head('ebsmon_monitor_pulse_timestamp_seconds', 'gauge', 'When the monitor last wrote its state (Unix time).');
  emit(`ebsmon_monitor_pulse_timestamp_seconds ${value(snapshot.monitor.writtenAt / 1000)}\n`);
  head('ebsmon_heartbeats_total', 'counter', 'Heartbeats accepted by the monitor.');
  emit(`ebsmon_heartbeats_total ${value(snapshot.monitor.heartbeats)}\n`);
  head('ebsmon_lines_rejected_total', 'counter', 'FIFO lines dropped by the decoder, by reason.');
  for (const [reason, n] of Object.entries(snapshot.monitor.linesRejected))
    emit(`ebsmon_lines_rejected_total{reason="${escapeLabel(reason)}"} ${value(n)}\n`);
  head('ebsmon_firewall_ok', 'gauge', '1 when the last firewall update succeeded.');
  emit(`ebsmon_firewall_ok ${snapshot.monitor.firewallOk ? 1 : 0}\n`);
  if (snapshot.monitor.socketCutter !== undefined) {
    head('ebsmon_socket_cutter_state', 'gauge', 'The socket cutter, which cuts clients waiting on a fenced port: 1 for its state (ok; unsupported: the kernel refuses SOCK_DESTROY; none: not running), 0 for the others.');
    for (const state of ['ok', 'unsupported', 'none'])
      emit(`ebsmon_socket_cutter_state{state="${state}"} ${snapshot.monitor.socketCutter.state === state ? 1 : 0}\n`);
  }
  if (snapshot.monitor.firewall !== undefined) {
    head('ebsmon_firewall_backend', 'gauge', 'The firewall backend in use (1), and whether the kernel holds the deadlines.');
    emit(`ebsmon_firewall_backend{backend="${snapshot.monitor.firewall}",deadlines_in_kernel="${snapshot.monitor.deadlinesInKernel === true}"} 1\n`);
  }
}
