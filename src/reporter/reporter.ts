import fs from 'node:fs';
import path from 'node:path';

import {StartupError, errnoCode} from '../errors';
import {encodeMessage} from '../heartbeat';
import type {Heartbeat} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {Prober, chooseMethod} from '../probe';
import type {ProbeOutcome} from '../probe';
import {FifoWriter} from '../transport';
import type {SendResult} from '../transport';

export type ReporterOptions = {
  monitor: string;
  ports: Array<number>;
  name: string;
  fifo: string;
  /** seconds */
  interval: number;
  /** seconds */
  probeTimeout: number;
};

export type ReporterDeps = {
  logger: Logger;
  /** Called once the first probe has been started: the daemon is running. */
  onReady?: () => void;
};

const REMINDER_MS = 60_000;
/** SIGTERM must end the reporter within 2 s (SPEC); a healthy probe takes milliseconds. */
const GOODBYE_WAIT_MS = 1_200;

export function defaultName(monitorDir: string): string {
  return path.basename(path.resolve(monitorDir));
}

/** Start-up checks, so a typo fails at once instead of as a fence later. */
export function checkMonitorDir(dir: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (error) {
    throw new StartupError(`--monitor=${dir}: ${errnoCode(error) === 'ENOENT' ? 'no such directory' : String(error)}`);
  }
  if (!stat.isDirectory())
    throw new StartupError(`--monitor=${dir}: not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new StartupError(`--monitor=${dir}: not writable by this user; the probe writes a block there`);
  }
}

type Health = {state: 'starting' | 'healthy' | 'failing', reason: string};

export async function runReporter(deps: ReporterDeps, options: ReporterOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  checkMonitorDir(options.monitor);

  const prober = new Prober(options.monitor, options.name, 'direct', options.probeTimeout * 1000);
  const writer = new FifoWriter(options.fifo);
  const limited = new RateLimitedLog(logger, REMINDER_MS);
  let health: Health = {state: 'starting', reason: ''};
  let seq = 0;
  /** Why the last send failed, or null while sends succeed: logs once per change, then reminders. */
  let sendFailure: string | null = null;
  let failingSince = 0;

  logger.info('reporter starting', {name: options.name, monitor: options.monitor, ports: options.ports.join(','), fifo: options.fifo, interval: options.interval, probeTimeout: options.probeTimeout});

  const send = (message: Parameters<typeof encodeMessage>[0]): SendResult => {
    const result = writer.send(encodeMessage(message));
    if (result.ok) {
      if (sendFailure !== null) {
        logger.info('monitor reachable again: heartbeats are being delivered', {fifo: options.fifo});
        sendFailure = null;
        limited.forget('send');
      }
    } else {
      if (sendFailure !== result.reason)
        limited.forget('send');
      sendFailure = result.reason;
      limited.log('warn', 'send', `${message.kind} dropped: ${result.detail}`, {reason: result.reason});
    }
    return result;
  };

  const transition = (outcome: ProbeOutcome) => {
    if (outcome.ok) {
      if (health.state !== 'healthy') {
        if (health.state === 'failing')
          logger.info('probe healthy again: heartbeats resume', {name: options.name, probeMs: round(outcome.ms), failedForSeconds: round((performance.now() - failingSince) / 1000)});
        else
          logger.info('probe healthy: sending heartbeats', {name: options.name, probeMs: round(outcome.ms)});
        limited.forget('failing');
      }
      health = {state: 'healthy', reason: ''};
      return;
    }

    if (health.state !== 'failing' || health.reason !== outcome.reason) {
      if (health.state !== 'failing')
        failingSince = performance.now();
      logger.error(`probe failed: ${outcome.reason}; no heartbeat until the disk answers`, {name: options.name, monitor: options.monitor, code: outcome.code});
      limited.mark('failing');
    } else {
      logger.debug(`probe still failing: ${outcome.reason}`, {name: options.name});
      limited.log('warn', 'failing', `probe still failing: ${outcome.reason}`, {name: options.name, failingForSeconds: round((performance.now() - failingSince) / 1000)});
    }
    health = {state: 'failing', reason: outcome.reason};
  };

  const beat = (outcome: ProbeOutcome & {ok: true}) => {
    seq += 1;
    const heartbeat: Heartbeat = {
      v: 1,
      kind: 'heartbeat',
      name: options.name,
      pid: process.pid,
      ports: options.ports,
      interval: options.interval,
      probeTimeout: options.probeTimeout,
      seq,
      sentAt: Date.now(),
      probeMs: round(outcome.ms),
    };
    if (send(heartbeat).ok)
      logger.debug('heartbeat sent', {seq, probeMs: heartbeat.probeMs});
  };

  let probing: Promise<void> | null = null;

  const tick = () => {
    if (signal.aborted)
      return;
    if (prober.busy) {
      logger.debug('previous probe process still exists (stuck in the kernel?); not starting another', {pid: prober.busyPid});
      return;
    }
    probing = (async () => {
      const outcome = await prober.probe(seq + 1);
      if (signal.aborted && !outcome.ok)
        return;
      transition(outcome);
      if (outcome.ok)
        beat(outcome);
    })();
  };

  const chosen = await chooseMethod(prober);
  logger.info(`probe method: ${chosen.detail}`, {method: chosen.method, file: prober.file});
  deps.onReady?.();
  if (!signal.aborted) {
    transition(chosen.first);
    if (chosen.first.ok)
      beat(chosen.first);
  }

  const timer = setInterval(tick, options.interval * 1000);

  await new Promise<void>(resolve => {
    if (signal.aborted)
      resolve();
    else
      signal.addEventListener('abort', () => resolve(), {once: true});
  });
  clearInterval(timer);

  // A goodbye tells the monitor to forget us instead of fencing; only say it
  // when the disk was proven healthy just now, never while a probe is stuck.
  if (probing !== null && prober.busy) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([probing, new Promise(resolve => {
      timer = setTimeout(resolve, GOODBYE_WAIT_MS);
    })]);
    // Left pending, the timer would hold the event loop (and the exit) open.
    clearTimeout(timer);
  }

  if (health.state === 'healthy' && !prober.busy) {
    const result = send({v: 1, kind: 'goodbye', name: options.name, pid: process.pid});
    logger.info(result.ok ? 'stopping: goodbye sent, the monitor forgets this reporter' : 'stopping: goodbye could not be delivered', {name: options.name});
  } else {
    logger.warn('stopping while the probe is failing: no goodbye, so a fence stays in place', {name: options.name, reason: health.reason});
  }
  writer.close();
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
