import {Command, Option, UsageError} from 'clipanion';

import {ExitCode} from '../src/errors';
import type {DaemonOptions} from '../src/daemon';
import {logFormatArg, logLevelArg} from '../src/options';

/**
 * Errors go to stderr (clipanion writes them to stdout) with the exit code
 * table of src/errors.ts: usage 2, operational 1.
 */
export abstract class EbsmonCommand extends Command {
  exitCode: number | undefined;

  override async catch(error: unknown): Promise<void> {
    this.context.stderr.write(this.cli.error(error as Error, {command: this}));
    this.exitCode = error instanceof UsageError ? ExitCode.usage : ExitCode.failure;
  }
}

export abstract class DaemonCommand extends EbsmonCommand {
  daemonize = Option.Boolean('--daemonize', false, {description: 'Detach (new session, stdio closed) and return once it is running'});
  pidfile = Option.String('--pidfile', {description: 'Write the pid here atomically; refuse to start if a live process holds it'});
  logfile = Option.String('--logfile', {description: 'Append logs here, reopened on SIGHUP (default: stderr)'});
  logLevel = Option.String('--log-level', 'info', {validator: logLevelArg, description: 'error|warn|info|debug'});
  logFormat = Option.String('--log-format', {validator: logFormatArg, description: 'text|json (default: text on a TTY, json otherwise)'});

  daemonOptions(): DaemonOptions {
    return {daemonize: this.daemonize, pidfile: this.pidfile, logfile: this.logfile, logLevel: this.logLevel, logFormat: this.logFormat};
  }
}
