import {Command, Option, UsageError} from 'clipanion';

import {runRole} from '../src/daemon';
import {nameArg, portListArg, secondsArg} from '../src/options';
import {defaultName, runReporter} from '../src/reporter';
import {NAME_PATTERN} from '../src/heartbeat';
import {DEFAULT_FIFO} from '../src/transport';
import {DaemonCommand} from './base';

export class ReportCommand extends DaemonCommand {
  static override paths = [['report']];

  static override usage = Command.Usage({
    description: 'Prove a directory\'s disk still completes I/O, and heartbeat the monitor',
    details: `
      One reporter per protected service. Every \`--interval\` seconds it writes a block to \`.ebsmon-probe-NAME\` in the \`--monitor\` directory with O_DIRECT|O_DSYNC (write + fsync where O_DIRECT is refused), reads it back, and only if that finished within \`--probe-timeout\` sends a heartbeat naming \`--ports\`. The probe runs in a child process, so a hung disk never wedges the reporter.

      SIGTERM stops it within 2 s; if the disk was healthy it says goodbye first (the monitor forgets it), otherwise it says nothing and the fence stays.
    `,
    examples: [
      ['Protect MySQL', '$0 report --monitor=/var/lib/mysql --ports=3306'],
      ['Protect a web server, as a daemon', '$0 report --daemonize --pidfile=/run/www-ebsmon.pid --logfile=/var/log/www-ebsmon.log --monitor=/var/www/html --ports=80,443'],
    ],
  });

  monitor = Option.String('--monitor', {required: true, description: 'Directory on the device to prove (the service\'s data directory)'});
  ports = Option.String('--ports', {required: true, validator: portListArg, description: 'TCP ports to fence when this disk hangs, e.g. 80,443'});
  name = Option.String('--name', {validator: nameArg, description: 'Reporter name (default: the last component of --monitor)'});
  fifo = Option.String('--fifo', DEFAULT_FIFO, {description: 'The monitor\'s FIFO'});
  interval = Option.String('--interval', '1', {validator: secondsArg, description: 'Seconds between probes'});
  probeTimeout = Option.String('--probe-timeout', '3', {validator: secondsArg, description: 'A probe slower than this counts as a hang'});

  async execute(): Promise<number | void> {
    const name = this.name ?? defaultName(this.monitor);
    if (!NAME_PATTERN.test(name))
      throw new UsageError(`--monitor=${this.monitor} gives the reporter name "${name}", which is not 1-64 characters of A-Z a-z 0-9 . _ -; pass --name`);
    await runRole({args: process.argv.slice(2), stdout: this.context.stdout, stderr: this.context.stderr, role: 'report'}, this.daemonOptions(), (logger, onReady, signal) => runReporter({logger, onReady}, {
      monitor: this.monitor,
      ports: this.ports,
      name,
      fifo: this.fifo,
      interval: this.interval,
      probeTimeout: this.probeTimeout,
    }, signal));
  }
}
