import path from 'node:path';

import {Command, Option, UsageError} from 'clipanion';

import {runRole, v8FlagsSet} from '../src/daemon';
import {countArg, nameArg, portListArg, secondsArg} from '../src/options';
import type {ScanTarget} from '../src/discovery';
import {resolveCheck} from '../src/probe';
import type {CheckSpec} from '../src/probe';
import {defaultName, runReporter} from '../src/reporter';
import type {ReporterOptions} from '../src/reporter';
import {MAX_ISOLATE, MAX_PATHS, NAME_PATTERN} from '../src/heartbeat';
import {DEFAULT_STATE_DIR} from '../src/state';
import {DEFAULT_FIFO} from '../src/transport';
import {DaemonCommand} from './base';

export class ReportCommand extends DaemonCommand {
  static override paths = [['report']];

  static override usage = Command.Usage({
    description: 'Prove the disks under a service still complete I/O, and heartbeat the monitor',
    details: `
      One reporter per protected service. Every \`--interval\` seconds, in each \`--monitor\` directory, it writes a block to \`.ebsmon-probe-NAME\` with O_DIRECT|O_DSYNC (O_DSYNC alone where O_DIRECT is refused), reads it back, and only if every directory passed within \`--probe-timeout\` sends a heartbeat naming \`--ports\`. Each directory has a prober of its own: one perl (which every Debian has), started once and asked each interval, so a hung disk never wedges the reporter. A prober that misses \`--probe-timeout\` is abandoned (killed; one stuck in the kernel dies when its I/O ends) and replaced only once it has exited, never stacked on top of it; a directory stuck this way holds up no other.

      Give \`--monitor\` once per volume the service needs (data, binlog or WAL, redo log), up to 8. At start each is resolved and pinned to its mount in /proc/self/mountinfo (logged as "watching DIR on DEVICE (FSTYPE) mounted at POINT"); before each probe the mount table is read again, and a mount that is gone or replaced fails the probe. A directory that is on / gets a warning, as does one whose /etc/fstab volume is not mounted; \`--require-mount\` makes both an error (exit 1).

      As root in a directory another user owns, the probe never follows a link and writes only to a regular file it created itself (O_NOFOLLOW, O_CREAT|O_EXCL; owner, link count, inode and device checked with fstat on the descriptor it writes through). Anything else at the probe name (symlink, FIFO, hard link, socket, directory) is removed without following it (a directory that is not empty is renamed aside, never entered) and logged as an error; nothing outside the watched directory is touched.

      \`--check=PROGRAM\` (repeatable) adds "the service answers" to "its disks answer": the command line is split into words as a shell would (quotes, backslashes) but run without a shell (nothing expanded), every interval, with the reporter's environment, in a process group of its own, one run at a time; it is killed with its group at \`--probe-timeout\`. Exit 0 is healthy; anything else holds the heartbeat back, and the first 4 KiB of its output go into the reason. A program that is missing or not executable is an error at start (exit 2).

      When a probe times out or gets an I/O error, the reason says what the device was doing, from its own counters in /sys/dev/block (never from the device): "14 requests in flight, none completed for 4.0 s" (stuck), "idle: ... the filesystem is blocking writes above the device (frozen?)", or "busy: ... (saturated, not hung)". The reason goes to the log and, once an interval, to the monitor, which puts it in the fence's reason; heartbeats carry the devices' counters for its metrics.

      \`--pid\`, \`--pid-file\` or \`--unit\` names the service instead of (or beside) its directories: at start and every \`--discover-interval\` seconds a child scans /proc for the filesystems its processes (and their descendants, or the unit's cgroup) hold files open for writing on (O_WRONLY or O_RDWR; memory and kernel filesystems skipped). Without \`--monitor\` each such volume is watched at the root of its mount like a \`--monitor\` directory, up to 8; one no longer written is dropped after 3 scans. With \`--monitor\`, every written volume no \`--monitor\` is on is a warning in the log, in heartbeats and in \`ebsmon status\`.

      In an HA cluster (nftables only), \`--isolate=PORTS\` makes a fence also cut this host from its coordinator (etcd's 2379, Galera's 4567): at the deadline its connections to those ports are destroyed and new ones refused, and its late replies to clients are held, so a hung primary can neither keep its lease nor acknowledge a commit late. \`--rejoin\` says when the fence lifts once the disks answer: \`auto\` (after the monitor's --recover heartbeats), \`manual\` (ebsmon unblock only), or a PROGRAM run each interval while the monitor says this reporter is fenced (it writes STATE_DIR/fenced/NAME; give \`--state-dir\`) and the disks pass: exit 10 gives the coordinator back, exit 0 the clients, anything else is not yet; its output is the reason ebsmon status shows. contrib/patroni and contrib/galera hold such programs and settings.

      SIGTERM stops it within 2 s; if the disks were healthy it says goodbye first (the monitor forgets it), otherwise it says nothing and the fence stays.
    `,
    examples: [
      ['Protect MySQL', '$0 report --monitor=/var/lib/mysql --ports=3306'],
      ['MySQL with its binlog on a volume of its own; refuse to start unless both are mounted', '$0 report --monitor=/var/lib/mysql --monitor=/var/lib/mysql-binlog --require-mount --ports=3306'],
      ['A Patroni node: cut from etcd while fenced, back as a follower in two stages', '$0 report --monitor=/srv/pg --ports=5432,8008 --isolate=2379 --rejoin="/usr/local/sbin/ebsmon-rejoin-patroni --api=http://10.0.0.11:8008" --state-dir=/run/ebsmon'],
      ['MySQL, and MySQL itself must answer a ping', '$0 report --monitor=/var/lib/mysql --ports=3306 --check="mysqladmin --socket=/run/mysqld/mysqld.sock ping"'],
      ['Protect MariaDB on every volume it writes to (data, binlog, redo), found from its pid file', '$0 report --pid-file=/run/mysqld/mysqld.pid --ports=3306'],
      ['Watch the listed directories, and warn about any other volume the unit writes to', '$0 report --monitor=/var/lib/postgresql --unit=postgresql@15-main.service --ports=5432'],
      ['Protect a web server, as a daemon', '$0 report --daemonize --pidfile=/run/www-ebsmon.pid --logfile=/var/log/www-ebsmon.log --monitor=/var/www/html --ports=80,443'],
    ],
  });

  monitor = Option.Array('--monitor', [], {description: 'Directory on a device to prove (the service\'s data directory); repeat for each volume, up to 8'});
  pid = Option.String('--pid', {validator: countArg, description: 'Find the volumes this process and its descendants write to: watch them (without --monitor) or warn about those no --monitor covers'});
  pidFile = Option.String('--pid-file', {description: 'As --pid, with the pid read from this file at every scan (a restarted service is followed)'});
  unit = Option.String('--unit', {description: 'As --pid, for every process of this systemd unit (NAME.service, its cgroup)'});
  discoverInterval = Option.String('--discover-interval', '10', {validator: secondsArg, description: 'Seconds between scans for --pid, --pid-file or --unit'});
  ports = Option.String('--ports', {required: true, validator: portListArg, description: 'TCP ports to fence when a disk hangs, e.g. 80,443'});
  name = Option.String('--name', {validator: nameArg, description: 'Reporter name (default: the last component of the first --monitor)'});
  check = Option.Array('--check', [], {description: 'A command (no shell) that must exit 0 within --probe-timeout every interval, e.g. "mysqladmin --socket=/run/mysqld/mysqld.sock ping"; repeatable'});
  requireMount = Option.Boolean('--require-mount', false, {description: 'Exit 1 at start if a --monitor directory is on / or its /etc/fstab volume is not mounted'});
  fifo = Option.String('--fifo', DEFAULT_FIFO, {description: 'The monitor\'s FIFO'});
  interval = Option.String('--interval', '1', {validator: secondsArg, description: 'Seconds between probes'});
  probeTimeout = Option.String('--probe-timeout', '3', {validator: secondsArg, description: 'A probe slower than this counts as a hang'});
  isolate = Option.String('--isolate', {validator: portListArg, description: 'While fenced, this host may not reach these TCP ports (its cluster\'s coordinator: etcd 2379, Consul 8500, ...) and its replies to clients are held; at most 16'});
  rejoin = Option.String('--rejoin', 'auto', {description: 'When a fence lifts once the disks answer: auto (after the monitor\'s --recover heartbeats), manual (only ebsmon unblock), or a PROGRAM run each interval while fenced (exit 10: the coordinator again, exit 0: clients again)'});
  stateDir = Option.String('--state-dir', DEFAULT_STATE_DIR, {description: 'The monitor\'s --state-dir, where it says which reporters are fenced (read for --rejoin=PROGRAM)'});

  async execute(): Promise<number | void> {
    if (this.monitor.length > MAX_PATHS)
      throw new UsageError(`--monitor given ${this.monitor.length} times; at most ${MAX_PATHS} directories per reporter`);
    const targets: Array<ScanTarget> = [
      ...(this.pid === undefined ? [] : [{kind: 'pid' as const, pid: this.pid}]),
      ...(this.pidFile === undefined ? [] : [{kind: 'pid-file' as const, file: this.pidFile}]),
      ...(this.unit === undefined ? [] : [{kind: 'unit' as const, unit: this.unit}]),
    ];
    if (targets.length > 1)
      throw new UsageError('--pid, --pid-file and --unit: give one of them');
    const target = targets[0];
    if (this.monitor.length === 0 && target === undefined)
      throw new UsageError('give --monitor (the directories to prove), or --pid, --pid-file or --unit (find them), or both');
    if (target?.kind === 'unit' && !/^[A-Za-z0-9:_.@\\-]+\.service$/.test(target.unit))
      throw new UsageError(`--unit=${target.unit}: not a unit name of the form NAME.service`);
    const name = this.name ?? (this.monitor.length > 0 ? defaultName(this.monitor[0]!) : discoveryName(target!));
    if (!NAME_PATTERN.test(name))
      throw new UsageError(`${this.monitor.length > 0 ? `--monitor=${this.monitor[0]}` : 'the service'} gives the reporter name "${name}", which is not 1-64 characters of A-Z a-z 0-9 . _ -; pass --name`);
    const checks: Array<CheckSpec> = this.check.map(text => {
      const resolved = resolveCheck(text);
      if ('error' in resolved)
        throw new UsageError(`--check=${text}: ${resolved.error}`);
      return resolved;
    });
    if (this.isolate !== undefined && this.isolate.length > MAX_ISOLATE)
      throw new UsageError(`--isolate names ${this.isolate.length} ports; at most ${MAX_ISOLATE}`);
    let rejoin: ReporterOptions['rejoin'];
    if (this.rejoin === 'auto' || this.rejoin === 'manual') {
      rejoin = {mode: this.rejoin};
    } else {
      const resolved = resolveCheck(this.rejoin);
      if ('error' in resolved)
        throw new UsageError(`--rejoin=${this.rejoin}: not auto or manual, and not a program: ${resolved.error}`);
      rejoin = {mode: 'program', program: resolved};
    }
    await runRole({args: process.argv.slice(2), stdout: this.context.stdout, stderr: this.context.stderr, role: 'report'}, this.daemonOptions(), (logger, onReady, signal) => runReporter({logger, onReady}, {
      monitors: this.monitor,
      ...(target === undefined ? {} : {discover: {target, intervalSec: this.discoverInterval}}),
      ports: this.ports,
      name,
      fifo: this.fifo,
      interval: this.interval,
      probeTimeout: this.probeTimeout,
      requireMount: this.requireMount,
      logfile: this.logfile,
      checks,
      ...(this.isolate === undefined ? {} : {isolate: this.isolate}),
      rejoin,
      stateDir: this.stateDir,
      v8Flags: v8FlagsSet(),
    }, signal));
  }
}

/** Without --monitor: the unit without ".service", the pid file's name without ".pid", or "pid-N". */
function discoveryName(target: ScanTarget): string {
  switch (target.kind) {
    case 'unit':
      return target.unit.replace(/\.service$/, '');
    case 'pid-file':
      return path.basename(target.file).replace(/\.pid$/, '');
    case 'pid':
      return `pid-${target.pid}`;
  }
}
