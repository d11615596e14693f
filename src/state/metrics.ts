import {REPORTER_STATES} from './snapshot';
import type {Snapshot} from './snapshot';

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Prometheus text exposition format 0.0.4, for node_exporter's textfile collector. */
export function renderMetrics(snapshot: Snapshot, now: number): string {
  const out: Array<string> = [];
  const family = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[Record<string, string>, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const rendered = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
      out.push(`${name}${rendered === '' ? '' : `{${rendered}}`} ${Number.isFinite(value) ? value : 'NaN'}`);
    }
  };
  const reporters = snapshot.reporters;

  family('ebsmon_reporter_state', 'gauge', 'Reporter state: 1 for the state it is in, 0 for the others.',
    reporters.flatMap(r => REPORTER_STATES.map(state => [{reporter: r.name, state}, r.state === state ? 1 : 0] as [Record<string, string>, number])));
  family('ebsmon_reporter_last_heartbeat_age_seconds', 'gauge', 'Seconds since the reporter\'s last accepted heartbeat.',
    reporters.map(r => [{reporter: r.name}, r.lastHeartbeatAt === null ? NaN : Math.max(0, (now - r.lastHeartbeatAt) / 1000)]));
  family('ebsmon_reporter_probe_latency_seconds', 'gauge', 'Latency of the probe behind the last heartbeat.',
    reporters.map(r => [{reporter: r.name}, r.lastProbeMs === null ? NaN : r.lastProbeMs / 1000]));
  family('ebsmon_reporter_fences_total', 'counter', 'Times the reporter\'s ports were fenced.',
    reporters.map(r => [{reporter: r.name}, r.fenceCount]));
  family('ebsmon_reporter_flaps_total', 'counter', 'Times a fence was lifted because heartbeats resumed.',
    reporters.map(r => [{reporter: r.name}, r.flapCount]));
  family('ebsmon_monitor_pulse_timestamp_seconds', 'gauge', 'When the monitor last wrote its state (Unix time).',
    [[{}, snapshot.monitor.writtenAt / 1000]]);
  family('ebsmon_heartbeats_total', 'counter', 'Heartbeats accepted by the monitor.',
    [[{}, snapshot.monitor.heartbeats]]);
  family('ebsmon_lines_rejected_total', 'counter', 'FIFO lines dropped by the decoder, by reason.',
    Object.entries(snapshot.monitor.linesRejected).map(([reason, n]) => [{reason}, n]));
  family('ebsmon_firewall_ok', 'gauge', '1 when the last firewall update succeeded.',
    [[{}, snapshot.monitor.firewallOk ? 1 : 0]]);
  return `${out.join('\n')}\n`;
}
