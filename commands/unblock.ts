import {Command, Option, UsageError} from 'clipanion';

import {unblock} from '../src/monitor';
import {nameArg, secondsArg} from '../src/options';
import {DEFAULT_STATE_DIR} from '../src/state';
import {DEFAULT_FIFO} from '../src/transport';
import {EbsmonCommand} from './base';

export class UnblockCommand extends EbsmonCommand {
  static override paths = [['unblock']];

  static override usage = Command.Usage({
    description: 'Lift a reporter\'s fence by hand (operator override)',
    details: `
      Asks the monitor to lift the fence of \`--reporter\` (or of every reporter with \`--all\`) and waits up to \`--wait\` seconds for its snapshot to show the reporter \`overridden\`. An override lasts until the reporter's next heartbeat, which makes it healthy.

      With no monitor reading the FIFO, it removes ebsmon's own rules itself (the reporter's, or with \`--all\` every ebsmon rule, the jump and the chain, IPv4 and IPv6), records the override in the snapshot so the next monitor does not put the fence back, and never touches any other rule.
    `,
    examples: [
      ['Let MySQL take traffic again', '$0 unblock --reporter=mysql'],
      ['Remove every ebsmon fence', '$0 unblock --all'],
    ],
  });

  reporter = Option.String('--reporter', {validator: nameArg, description: 'The reporter whose fence to lift'});
  all = Option.Boolean('--all', false, {description: 'Lift every fence'});
  fifo = Option.String('--fifo', DEFAULT_FIFO, {description: 'The monitor\'s FIFO'});
  stateDir = Option.String('--state-dir', DEFAULT_STATE_DIR, {description: 'The monitor\'s state directory'});
  wait = Option.String('--wait', '5', {validator: secondsArg, description: 'Seconds to wait for the monitor to confirm'});

  async execute(): Promise<number> {
    if ((this.reporter === undefined) === !this.all)
      throw new UsageError('give exactly one of --reporter=NAME or --all');
    const lines = await unblock({name: this.reporter ?? null, fifo: this.fifo, stateDir: this.stateDir, wait: this.wait});
    for (const line of lines)
      this.context.stdout.write(`${line}\n`);
    return 0;
  }
}
