import {HISTORY_MAX, PULSE_FRESH_SECONDS} from './snapshot';
import type {ReporterSnapshot, Snapshot} from './snapshot';

export type StatusView = {
  monitor: Snapshot['monitor'] & {alive: boolean, pulseAgeSeconds: number};
  reporters: Array<ReporterSnapshot & {lastHeartbeatAgeSeconds: number | null, fencedForSeconds: number | null, deadlineInSeconds: number | null, failureAgeSeconds?: number}>;
};

const round1 = (n: number) => Math.round(n * 10) / 10;

export function statusView(snapshot: Snapshot, now: number): StatusView {
  const pulseAgeSeconds = round1(Math.max(0, now - snapshot.monitor.writtenAt) / 1000);
  return {
    monitor: {...snapshot.monitor, alive: pulseAgeSeconds < PULSE_FRESH_SECONDS, pulseAgeSeconds},
    reporters: snapshot.reporters.map(r => ({
      ...r,
      lastHeartbeatAgeSeconds: r.lastHeartbeatAt === null ? null : round1(Math.max(0, now - r.lastHeartbeatAt) / 1000),
      fencedForSeconds: r.fencedSince === null ? null : round1(Math.max(0, now - r.fencedSince) / 1000),
      deadlineInSeconds: r.deadlineAt === undefined || r.deadlineAt === null ? null : round1(Math.max(0, r.deadlineAt - now) / 1000),
      ...(r.failure === undefined ? {} : {failureAgeSeconds: round1(Math.max(0, now - r.failure.at) / 1000)}),
    })),
  };
}

export function formatAge(seconds: number | null): string {
  if (seconds === null)
    return 'never';
  if (seconds < 60)
    return `${seconds.toFixed(1)}s ago`;
  if (seconds < 3600)
    return `${Math.floor(seconds / 60)}m${Math.floor(seconds % 60)}s ago`;
  return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m ago`;
}

export type Colors = {red: (s: string) => string, green: (s: string) => string, yellow: (s: string) => string, bold: (s: string) => string};
const plain = (s: string) => s;
export const NO_COLORS: Colors = {red: plain, green: plain, yellow: plain, bold: plain};
export const ANSI_COLORS: Colors = {
  red: s => `\x1b[31m${s}\x1b[0m`,
  green: s => `\x1b[32m${s}\x1b[0m`,
  yellow: s => `\x1b[33m${s}\x1b[0m`,
  bold: s => `\x1b[1m${s}\x1b[0m`,
};

function headline(view: StatusView): string {
  const m = view.monitor;
  const count = `${view.reporters.length} reporter${view.reporters.length === 1 ? '' : 's'}`;
  const firewall = m.firewall === undefined ? '' : `, firewall ${m.firewall}${m.deadlinesInKernel === true ? ' (deadlines in the kernel)' : ''}`;
  if (m.alive)
    return `monitor alive: pid ${m.pid}, pulse ${m.pulseAgeSeconds.toFixed(1)}s ago, ${count}${firewall}`;
  // With kernel-held deadlines the fences still land; only recovery, status and alerts wait for a monitor.
  const consequence = m.deadlinesInKernel === true ? 'the kernel still fences at each deadline, but nothing unfences' : 'fences are not being kept';
  return `monitor NOT RUNNING: last pulse ${formatAge(m.pulseAgeSeconds)} (pid ${m.pid}), ${count}${firewall}; ${consequence}`;
}

/** `reasons`: under each reporter that is not healthy, why (the fence's reason), and what the reporter says now. */
export function renderTable(view: StatusView, colors: Colors = NO_COLORS, {reasons = false}: {reasons?: boolean} = {}): string {
  const lines = [view.monitor.alive ? headline(view) : colors.red(headline(view))];
  if (!view.monitor.firewallOk)
    lines.push(colors.red('the monitor\'s last firewall update failed; see its log'));
  const cutter = view.monitor.socketCutter;
  if (cutter !== undefined && cutter.state !== 'ok')
    lines.push(colors.yellow(cutter.state === 'unsupported'
      ? `clients already waiting on a fenced port are not cut: this kernel refuses to destroy sockets (${cutter.detail ?? 'SOCK_DESTROY'})`
      : `no socket cutter (${cutter.detail ?? 'not running'}): clients already waiting on a fenced port are cut by ss -K, an exec a hung disk can stall`));
  if (view.reporters.length === 0)
    return `${lines.join('\n')}\nno reporters yet\n`;

  const header = ['REPORTER', 'STATE', 'PORTS', 'LAST HEARTBEAT', 'DEADLINE', 'FENCED SINCE', 'FENCES', 'DEVICES'];
  const rows = view.reporters.map(r => [
    r.name,
    r.state,
    r.ports.join(',') || '-',
    formatAge(r.lastHeartbeatAgeSeconds),
    r.deadlineInSeconds === null ? '-' : `in ${r.deadlineInSeconds.toFixed(1)}s`,
    r.fencedSince === null ? '-' : `${new Date(r.fencedSince).toISOString()} (${formatAge(r.fencedForSeconds)})`,
    String(r.fenceCount),
    r.paths === undefined ? '-' : r.paths.map(p => `${p.path}=${p.source}`).join(' '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)));
  const pad = (cells: Array<string>) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ');
  const paint = (state: string, text: string) => (state === 'fenced' ? colors.red(text) : state === 'overridden' ? colors.yellow(text) : colors.green(text));
  lines.push(colors.bold(pad(header)));
  rows.forEach((row, i) => {
    const state = row[1]!;
    const text = pad(row);
    lines.push(text.replace(state.padEnd(widths[1]!), paint(state, state.padEnd(widths[1]!))));
    // Why it is not healthy, in the monitor's words and (after its last heartbeat) the reporter's.
    const r = view.reporters[i]!;
    const rejoin = rejoinLine(r);
    if (rejoin !== null)
      lines.push(`  ${rejoin}`);
    for (const line of unwatchedLines(r))
      lines.push(colors.yellow(`  ${line}`));
    if (reasons && r.state !== 'healthy')
      lines.push(`  why: ${r.reason}`);
    if (reasons && r.failure !== undefined && !r.reason.includes(r.failure.reason))
      lines.push(`  reporter says (${formatAge(r.failureAgeSeconds ?? null)}): ${r.failure.reason}`);
  });
  return `${lines.join('\n')}\n`;
}

/** A volume the reporter's service writes to that nothing watches: a hang there is never fenced. */
export function unwatchedLines(r: ReporterSnapshot): Array<string> {
  return (r.unwatched ?? []).map(u => `${u.file} on ${u.source} (${u.device}), not watched`);
}

/** Where a fenced reporter stands once its disks answer again; null while it waits for them. */
export function rejoinLine(r: ReporterSnapshot): string | null {
  if (r.state !== 'fenced' || r.rejoin === undefined)
    return null;
  const said = r.rejoin.reason === undefined ? '' : `: ${r.rejoin.reason}`;
  if (r.rejoin.stage === 'voice')
    return `rejoin: coordinator reachable again, clients still fenced${said}`;
  if (r.rejoin.waiting === 'operator')
    return `rejoin: its disks answer again; fenced, waiting for an operator (ebsmon unblock --reporter=${r.name})`;
  if (r.rejoin.waiting === 'program')
    return `rejoin: its disks answer again; fenced, waiting for its rejoin program${said}`;
  return null;
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null)
    return '-';
  if (seconds < 60)
    return `${seconds.toFixed(1)}s`;
  if (seconds < 3600)
    return `${Math.floor(seconds / 60)}m${Math.floor(seconds % 60)}s`;
  if (seconds < 86400)
    return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

/** Every reporter's recorded transitions, oldest first, as a log an operator reads the morning after. */
export function renderHistory(view: StatusView, colors: Colors = NO_COLORS): string {
  const entries = view.reporters.flatMap(r => (r.history ?? []).map(h => ({name: r.name, ...h}))).sort((a, b) => a.at - b.at || a.name.localeCompare(b.name));
  if (entries.length === 0)
    return 'history: no transitions recorded\n';
  const header = ['TIME', 'REPORTER', 'CHANGE', 'AFTER', 'REASON'];
  const rows = entries.map(e => [new Date(e.at).toISOString(), e.name, `${e.from} -> ${e.state}`, formatDuration(e.previousSeconds), e.reason]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)));
  const pad = (cells: Array<string>) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ');
  const paint = (state: string, text: string) => (state === 'fenced' ? colors.red(text) : state === 'overridden' ? colors.yellow(text) : colors.green(text));
  const lines = [`history (the last ${HISTORY_MAX} transitions of each reporter, oldest first; AFTER: how long the previous state lasted)`, colors.bold(pad(header))];
  rows.forEach((row, i) => lines.push(paint(entries[i]!.state, pad(row))));
  return `${lines.join('\n')}\n`;
}

export const NAGIOS = {ok: 0, warning: 1, critical: 2, unknown: 3} as const;

export function renderNagios(view: StatusView): {line: string, code: number} {
  // A fenced reporter whose disks answer again and that only waits for an operator is a decision to make, not an outage.
  const waiting = view.reporters.filter(r => r.state === 'fenced' && r.rejoin?.waiting === 'operator');
  const fenced = view.reporters.filter(r => r.state === 'fenced' && !waiting.includes(r));
  const overridden = view.reporters.filter(r => r.state === 'overridden');
  const pulse = view.monitor.pulseAgeSeconds.toFixed(1);
  const perf = `| reporters=${view.reporters.length} fenced=${fenced.length + waiting.length} overridden=${overridden.length} pulse_age=${pulse}s;;${PULSE_FRESH_SECONDS}`;
  const names = (list: Array<{name: string}>) => list.map(r => r.name).join(', ');
  if (!view.monitor.alive)
    return {line: `CRITICAL: monitor not running, last pulse ${pulse}s ago (pid ${view.monitor.pid}) ${perf}`, code: NAGIOS.critical};
  if (fenced.length > 0)
    return {line: `CRITICAL: ${fenced.length} of ${view.reporters.length} reporters fenced (${names(fenced)}), monitor pulse ${pulse}s ago ${perf}`, code: NAGIOS.critical};
  if (waiting.length > 0)
    return {line: `WARNING: ${waiting.length} reporter${waiting.length === 1 ? '' : 's'} fenced, waiting for an operator (${names(waiting)}): the disks answer again; ebsmon unblock lifts it, monitor pulse ${pulse}s ago ${perf}`, code: NAGIOS.warning};
  if (overridden.length > 0)
    return {line: `WARNING: ${overridden.length} reporter${overridden.length === 1 ? '' : 's'} overridden (${names(overridden)}), monitor pulse ${pulse}s ago ${perf}`, code: NAGIOS.warning};
  const unwatched = view.reporters.filter(r => (r.unwatched ?? []).length > 0);
  if (unwatched.length > 0)
    return {line: `WARNING: a volume written but not watched: ${unwatched.map(r => `${r.name}: ${unwatchedLines(r).join('; ')}`).join('; ')}, monitor pulse ${pulse}s ago ${perf}`, code: NAGIOS.warning};
  return {line: `OK: ${view.reporters.length} reporter${view.reporters.length === 1 ? '' : 's'} healthy, monitor pulse ${pulse}s ago ${perf}`, code: NAGIOS.ok};
}
