import {Builtins, Cli} from 'clipanion';
import type {BaseContext} from 'clipanion';

import {ExitCode} from '../src/errors';
import {EbsmonCommand} from './base';
import {MonitorCommand} from './monitor';
import {ReportCommand} from './report';
import {StatusCommand} from './status';
import {UnblockCommand} from './unblock';

declare const EBSMON_VERSION: string | undefined;
export const VERSION = typeof EBSMON_VERSION === 'string' ? EBSMON_VERSION : '0.0.0-dev';

export function buildCli(): Cli<BaseContext> {
  const cli = new Cli({binaryLabel: 'ebsmon', binaryName: 'ebsmon', binaryVersion: VERSION, enableColors: false});
  cli.register(MonitorCommand);
  cli.register(ReportCommand);
  cli.register(StatusCommand);
  cli.register(UnblockCommand);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  return cli;
}

/** Runs one command line; errors to stderr, exit 2 for bad usage, 1 for failures. */
export async function runCli(argv: Array<string>, context: Partial<BaseContext> = {}): Promise<number> {
  const cli = buildCli();
  const ctx = {...Cli.defaultContext, ...context};
  let command;
  try {
    command = cli.process(argv, ctx);
  } catch (error) {
    ctx.stderr.write(cli.error(error as Error, {colored: false}));
    return ExitCode.usage;
  }
  const code = await cli.run(command, ctx);
  return command instanceof EbsmonCommand && command.exitCode !== undefined ? command.exitCode : code;
}
