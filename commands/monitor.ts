import {Command, Option} from 'clipanion';

import {runRole} from '../src/daemon';
import {runMonitor} from '../src/monitor';
import {countArg, firewallArg, protectPortsArg, secondsArg} from '../src/options';
import {DEFAULT_STATE_DIR} from '../src/state';
import {DEFAULT_FIFO} from '../src/transport';
import {DaemonCommand} from './base';

export class MonitorCommand extends DaemonCommand {
  static override paths = [['monitor']];

  static override usage = Command.Usage({
    description: 'Fence reporters\' TCP ports when their heartbeats stop',
    details: `
      The one monitor per host. It reads heartbeats from the FIFO, keeps a registry of reporters, and when a reporter has been silent for \`--timeout\` seconds its ports are fenced: remote TCP traffic to them gets a reset (IPv4 and IPv6). After \`--recover\` consecutive heartbeats the fence is lifted.

      With nftables (the default where \`nft\` works) the kernel itself holds each reporter's deadline, in table \`inet ebsmon\`: every heartbeat re-arms it, and when the heartbeats stop the kernel fences on time even if this monitor is frozen, killed, or waiting on a hung disk. With \`--firewall=iptables\` (chain \`EBSMON\`, one jump at the top of \`INPUT\`) the monitor itself must run to fence.

      After start-up it execs nothing on the fence path and touches no disk but its state directory (tmpfs); log and metrics-file writes never block it. Stopped with SIGTERM it leaves fences in place and healthy ports open without a deadline; the next monitor adopts both.
    `,
    examples: [
      ['Run in the foreground, logging to stderr', '$0 monitor'],
      ['Run as a daemon', '$0 monitor --daemonize --pidfile=/run/ebsmon-monitor.pid --logfile=/var/log/ebsmon-monitor.log'],
      ['Fence after 5 s of silence, lift after 2 heartbeats', '$0 monitor --timeout=5 --recover=2'],
      ['Use iptables on a host without nftables', '$0 monitor --firewall=iptables'],
    ],
  });

  fifo = Option.String('--fifo', DEFAULT_FIFO, {description: 'FIFO to read heartbeats from (created 0600 if missing)'});
  stateDir = Option.String('--state-dir', DEFAULT_STATE_DIR, {description: 'Directory (tmpfs) for state.json and metrics.prom'});
  timeout = Option.String('--timeout', '10', {validator: secondsArg, description: 'Seconds without a heartbeat before a reporter is fenced'});
  recover = Option.String('--recover', '3', {validator: countArg, description: 'Consecutive heartbeats before a fence is lifted'});
  protectPorts = Option.String('--protect-ports', '22', {validator: protectPortsArg, description: 'Ports never fenced, whatever a reporter asks'});
  maxReporters = Option.String('--max-reporters', '1024', {validator: countArg, description: 'Most reporters tracked; new names beyond it are refused'});
  onChange = Option.String('--on-change', {description: 'Program run (no shell) on every fence, unfence and override, with EBSMON_REPORTER, EBSMON_PORTS, EBSMON_STATE, EBSMON_REASON'});
  metricsFile = Option.String('--metrics-file', {description: 'Also write the Prometheus metrics here (e.g. node_exporter\'s textfile directory)'});
  firewall = Option.String('--firewall', 'auto', {validator: firewallArg, description: 'auto|nftables|iptables: auto is nftables where nft works (the kernel then holds every deadline), else iptables'});

  async execute(): Promise<number | void> {
    await runRole({args: process.argv.slice(2), stdout: this.context.stdout, stderr: this.context.stderr, role: 'monitor'}, this.daemonOptions(), (logger, onReady, signal) => runMonitor({logger, onReady}, {
      fifo: this.fifo,
      stateDir: this.stateDir,
      timeout: this.timeout,
      recover: this.recover,
      protectPorts: this.protectPorts,
      maxReporters: this.maxReporters,
      onChange: this.onChange,
      metricsFile: this.metricsFile,
      firewall: this.firewall,
    }, signal));
  }
}
