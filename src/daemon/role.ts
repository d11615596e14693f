import {PidfileError} from '../errors';
import {createLogger} from '../log';
import type {LogFormat, LogLevel, Logger} from '../log';
import {daemonize, isDaemonChild, reportReady, reportStartFailure} from './daemonize';
import {acquirePidfile, inspectPidfile} from './pidfile';
import type {Pidfile} from './pidfile';
import {handleSignals} from './signals';

export type DaemonOptions = {
  daemonize: boolean;
  pidfile?: string;
  logfile?: string;
  logLevel: LogLevel;
  logFormat?: LogFormat;
};

export type RoleContext = {
  /** the command line, to start the same command again as a daemon */
  args: ReadonlyArray<string>;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  role: string;
};

export type Role = (logger: Logger, onReady: () => void, signal: AbortSignal) => Promise<void>;

/** The long-running roles share this: daemonize, pidfile, logging, signals. */
export async function runRole(context: RoleContext, options: DaemonOptions, role: Role): Promise<void> {
  if (options.daemonize && !isDaemonChild()) {
    if (options.pidfile !== undefined) {
      const status = inspectPidfile(options.pidfile);
      if (status.state === 'held')
        throw new PidfileError(`${options.pidfile} is held by running process ${status.pid}; is another ebsmon ${context.role} already running?`);
    }
    const pid = await daemonize(context.args, {logfile: options.logfile});
    context.stdout.write(`ebsmon ${context.role} running in the background, pid ${pid}\n`);
    return;
  }

  const log = createLogger({level: options.logLevel, format: options.logFormat, logfile: options.logfile, stream: context.stderr});
  const signals = handleSignals({onHangup: () => {
    log.reopen();
    log.logger.info('log file reopened (SIGHUP)');
  }});
  let pidfile: Pidfile | null = null;
  try {
    if (options.pidfile !== undefined)
      pidfile = acquirePidfile(options.pidfile, message => log.logger.warn(message));
    await role(log.logger, () => {
      if (isDaemonChild())
        reportReady();
    }, signals.signal);
  } catch (error) {
    if (isDaemonChild())
      reportStartFailure(error);
    throw error;
  } finally {
    pidfile?.release();
    signals.dispose();
    await log.close();
  }
}
