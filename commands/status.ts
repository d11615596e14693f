import {Command, Option, UsageError} from 'clipanion';

import {SnapshotError} from '../src/errors';
import {ANSI_COLORS, DEFAULT_STATE_DIR, NAGIOS, NO_COLORS, readSnapshot, renderHistory, renderNagios, renderTable, snapshotPath, statusView} from '../src/state';
import {EbsmonCommand} from './base';

export class StatusCommand extends EbsmonCommand {
  static override paths = [['status']];

  static override usage = Command.Usage({
    description: 'Show the monitor\'s view: which reporters are healthy, fenced or overridden',
    details: `
      Reads the snapshot the monitor writes to \`--state-dir\` at least once a second; touches neither the FIFO nor the firewall, so it works as any user who can read the state directory. The headline says whether the monitor itself is alive (its pulse younger than 3 s).

      \`--history\` adds, under each reporter that is not healthy, why (and what the reporter says now), and each reporter's last 20 transitions (time, change, how long the previous state lasted, reason), oldest first: what happened last night after the fence is gone. \`--json\` always includes them (\`history\`), with the devices' last counters and what the reporter said.

      Exit code: 0 when the snapshot could be read, 1 when not. With \`--nagios\`: 0 OK, 1 WARNING (a reporter overridden), 2 CRITICAL (a reporter fenced, or the monitor not running), 3 UNKNOWN (no snapshot).
    `,
    examples: [
      ['Show a table', '$0 status'],
      ['Machine-readable', '$0 status --json'],
      ['What happened, and why', '$0 status --history'],
      ['As a Nagios/Icinga check', '$0 status --nagios'],
    ],
  });

  stateDir = Option.String('--state-dir', DEFAULT_STATE_DIR, {description: 'The monitor\'s state directory'});
  json = Option.Boolean('--json', false, {description: 'Print the snapshot with computed ages as JSON'});
  nagios = Option.Boolean('--nagios', false, {description: 'Print one Nagios plugin line; exit 0/1/2/3'});
  history = Option.Boolean('--history', false, {description: 'Also print each reporter\'s last 20 transitions with their reasons'});

  async execute(): Promise<number> {
    if (this.json && this.nagios)
      throw new UsageError('--json and --nagios are exclusive: pick one');
    if (this.history && this.nagios)
      throw new UsageError('--history and --nagios are exclusive: a Nagios check prints one line');

    let snapshot;
    try {
      snapshot = readSnapshot(this.stateDir);
    } catch (error) {
      if (this.nagios && error instanceof SnapshotError) {
        this.context.stdout.write(`UNKNOWN: ${error.message}\n`);
        return NAGIOS.unknown;
      }
      throw error;
    }
    if (snapshot === null) {
      const message = `no ebsmon snapshot at ${snapshotPath(this.stateDir)} (is the monitor running?)`;
      if (this.nagios) {
        this.context.stdout.write(`UNKNOWN: ${message}\n`);
        return NAGIOS.unknown;
      }
      throw new SnapshotError(message);
    }

    const view = statusView(snapshot, Date.now());
    if (this.nagios) {
      const {line, code} = renderNagios(view);
      this.context.stdout.write(`${line}\n`);
      return code;
    }
    if (this.json) {
      this.context.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
      return 0;
    }
    const tty = (this.context.stdout as {isTTY?: boolean}).isTTY === true;
    const colors = tty ? ANSI_COLORS : NO_COLORS;
    this.context.stdout.write(renderTable(view, colors, {reasons: this.history}));
    if (this.history)
      this.context.stdout.write(`\n${renderHistory(view, colors)}`);
    return 0;
  }
}
