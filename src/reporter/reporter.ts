import fs from 'node:fs';
import path from 'node:path';

import {StartupError} from '../errors';
import {MAX_LINE_BYTES, MAX_PATHS, PATH_FIELD_MAX, encodeMessage, isHeartbeat} from '../heartbeat';
import type {Heartbeat, PathInfo} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {Prober, checkMount, chooseMethod, describeMount, logfileWarnings, pinPath, probeFile, readMountTable} from '../probe';
import type {FileEvent, MountEntry, PathPin, ProbeOutcome} from '../probe';
import {FifoWriter} from '../transport';
import type {SendResult} from '../transport';

export type ReporterOptions = {
  /** the watched directories; the first one names the reporter by default */
  monitors: Array<string>;
  ports: Array<number>;
  name: string;
  fifo: string;
  /** seconds */
  interval: number;
  /** seconds */
  probeTimeout: number;
  /** refuse to start on a path that is not on a volume of its own */
  requireMount?: boolean;
  /** only to warn when it shares a device with a watched path */
  logfile?: string;
};

export type ReporterDeps = {
  logger: Logger;
  /** Called once the first probe has been started: the daemon is running. */
  onReady?: () => void;
};

const REMINDER_MS = 60_000;
/** SIGTERM must end the reporter within 2 s (SPEC); a healthy probe takes milliseconds. */
const GOODBYE_WAIT_MS = 1_200;
const PROTECTED_HARDLINKS = '/proc/sys/fs/protected_hardlinks';

export function defaultName(monitorDir: string): string {
  return path.basename(path.resolve(monitorDir));
}

/** Keeps the end of a long path (the informative part) within the wire limit; never empty (a mount's source can be). */
function clip(text: string, max: number): string {
  if (text === '')
    return '-';
  return text.length <= max ? text : `\u2026${text.slice(text.length - max + 1)}`;
}

export function pathInfo(pin: PathPin): PathInfo {
  return {
    path: clip(pin.path, PATH_FIELD_MAX.path),
    device: pin.mount.device,
    source: clip(pin.mount.source, PATH_FIELD_MAX.source),
    fstype: clip(pin.mount.fstype, PATH_FIELD_MAX.fstype),
    mountPoint: clip(pin.mount.mountPoint, PATH_FIELD_MAX.mountPoint),
  };
}

/** Start-up: every watched path resolved and pinned to its mount, with what an operator must know about it. */
export function pinAll(options: ReporterOptions, logger: Logger, entries: ReadonlyArray<MountEntry>): Array<PathPin> {
  if (options.monitors.length > MAX_PATHS)
    throw new StartupError(`--monitor given ${options.monitors.length} times; at most ${MAX_PATHS} paths per reporter`);
  const pins: Array<PathPin> = [];
  for (const given of options.monitors) {
    const pin = pinPath(given, entries);
    const twin = pins.find(p => p.dir === pin.dir);
    if (twin !== undefined)
      throw new StartupError(`--monitor=${given} is the same directory as --monitor=${twin.path} (${pin.dir})`);
    pins.push(pin);
    logger.info(`watching ${pin.dir === given ? given : `${given} (${pin.dir})`} on ${describeMount(pin.mount)}`, {path: given, device: pin.mount.device, mountId: pin.mount.id, source: pin.mount.source, fstype: pin.mount.fstype, mountPoint: pin.mount.mountPoint});
    for (const warning of pin.warnings)
      logger.warn(warning, {path: given});
  }
  const unmounted = pins.flatMap(pin => pin.unmounted);
  if (options.requireMount === true && unmounted.length > 0)
    throw new StartupError(`${unmounted.join('; ')} (--require-mount: refusing to start)`);
  for (const problem of unmounted)
    logger.warn(problem);
  if (options.logfile !== undefined) {
    for (const warning of logfileWarnings(options.logfile, pins, entries))
      logger.warn(warning);
  }
  return pins;
}

/** What fs.protected_hardlinks guarantees here, said once at start-up. */
function logHardlinkProtection(logger: Logger): void {
  let value = '';
  try {
    value = fs.readFileSync(PROTECTED_HARDLINKS, 'utf8').trim();
  } catch {}
  if (value === '1')
    logger.info('fs.protected_hardlinks=1: a user can hard-link only files it owns or can write, so no link at the probe name can lead to a file that user could not already change', {protectedHardlinks: 1});
  else
    logger.warn(`fs.protected_hardlinks=${value === '' ? 'unknown' : value}: any user who can write a watched directory can hard-link other files of that filesystem to the probe name; the probe refuses a file with more than one link, but set fs.protected_hardlinks=1`, {protectedHardlinks: value});
}

/** One watched path: its pin, its own probe child (never stacked), and its latest result. */
type Watched = {
  pin: PathPin;
  prober: Prober;
  /** the latest finished probe or mount check; null before the first */
  latest: ProbeOutcome | null;
  /** when the latest passing probe started (performance.now()) */
  provenAt: number;
  probes: number;
  running: Promise<void> | null;
};

type Health = {state: 'starting' | 'healthy' | 'failing', reason: string};

function describeEvent(file: string, event: FileEvent): {level: 'error' | 'warn' | 'info', message: string} {
  switch (event.kind) {
    case 'found':
      return {level: 'error', message: `${file}: found a ${event.what} (owner uid ${event.uid}, ${event.links} link${event.links === 1 ? '' : 's'}, inode ${event.inode}) that this reporter did not create; removed it without following it${event.what === 'symlink' ? ' (its target is untouched)' : ''} and created a file of its own`};
    case 'stale':
      return {level: 'info', message: `${file}: removed the probe file of an earlier run and created a new one`};
    case 'missing':
      return {level: 'warn', message: `${file}: the probe file this reporter created was removed by someone else; created a new one`};
    case 'moved':
      return {level: 'error', message: `${file}: a directory that is not empty was at the probe name; renamed it to ${event.to} (never entered as root)`};
  }
}

export async function runReporter(deps: ReporterDeps, options: ReporterOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  logger.info('reporter starting', {name: options.name, monitor: options.monitors.join(','), ports: options.ports.join(','), fifo: options.fifo, interval: options.interval, probeTimeout: options.probeTimeout});
  const pins = pinAll(options, logger, readMountTable());
  logHardlinkProtection(logger);

  const watched: Array<Watched> = pins.map(pin => ({
    pin,
    prober: new Prober({dir: pin.dir, name: options.name, dev: pin.dev, ino: pin.ino}, 'direct', options.probeTimeout * 1000),
    latest: null,
    provenAt: -Infinity,
    probes: 0,
    running: null,
  }));
  const writer = new FifoWriter(options.fifo);
  const limited = new RateLimitedLog(logger, REMINDER_MS);
  let health: Health = {state: 'starting', reason: ''};
  let seq = 0;
  /** Why the last send failed, or null while sends succeed: logs once per change, then reminders. */
  let sendFailure: string | null = null;
  let failingSince = 0;
  /** When the last heartbeat was decided: the next one needs a proof of every path started after it. */
  let lastBeatAt = -Infinity;

  let paths: Array<PathInfo> | undefined = pins.map(pathInfo);
  const worstCase: Heartbeat = {v: 1, kind: 'heartbeat', name: options.name, pid: process.pid, ports: options.ports, interval: options.interval, probeTimeout: options.probeTimeout, seq: Number.MAX_SAFE_INTEGER, sentAt: Date.now() * 10, probeMs: 1e9 + 0.25, paths};
  // The monitor drops a heartbeat that fails its schema (and then fences): better no devices than no heartbeat.
  const errors: Array<string> = [];
  if (!isHeartbeat(worstCase, {errors}) || Buffer.byteLength(JSON.stringify(worstCase)) + 1 > MAX_LINE_BYTES) {
    logger.warn(`heartbeats go without the watched paths' devices: ${errors.length > 0 ? errors.join('; ') : `they would make a heartbeat longer than ${MAX_LINE_BYTES} bytes (PIPE_BUF)`}`);
    paths = undefined;
  }

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

  const transition = (outcome: {ok: true, ms: number} | {ok: false, reason: string, code: string}) => {
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
      logger.error(`probe failed: ${outcome.reason}; no heartbeat until the disk answers`, {name: options.name, code: outcome.code});
      limited.mark('failing');
    } else {
      logger.debug(`probe still failing: ${outcome.reason}`, {name: options.name});
      limited.log('warn', 'failing', `probe still failing: ${outcome.reason}`, {name: options.name, failingForSeconds: round((performance.now() - failingSince) / 1000)});
    }
    health = {state: 'failing', reason: outcome.reason};
  };

  const beat = (probeMs: number) => {
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
      probeMs: round(probeMs),
      ...(paths === undefined ? {} : {paths}),
    };
    if (send(heartbeat).ok)
      logger.debug('heartbeat sent', {seq, probeMs: heartbeat.probeMs});
  };

  /**
   * Healthy only when every path's latest probe passed; a heartbeat only when
   * every path has proven I/O with a probe started after the last heartbeat,
   * so a path whose probe is still in flight holds the heartbeat back, and one
   * round of probes gives one heartbeat.
   */
  const evaluate = () => {
    const failing = watched.filter(w => w.latest !== null && !w.latest.ok);
    if (failing.length > 0) {
      if (signal.aborted)
        return;
      const reason = failing.map(w => `${w.pin.path}: ${(w.latest as ProbeOutcome & {ok: false}).reason}`).join('; ');
      transition({ok: false, reason, code: (failing[0]!.latest as ProbeOutcome & {ok: false}).code});
      return;
    }
    if (watched.some(w => w.latest === null))
      return;
    if (watched.some(w => w.provenAt <= lastBeatAt))
      return;
    lastBeatAt = performance.now();
    const ms = Math.max(...watched.map(w => w.latest!.ms));
    transition({ok: true, ms});
    if (!signal.aborted)
      beat(ms);
  };

  /** procfs only: this process never stats or opens a watched path after start-up (that can hang). */
  const mountProblem = (w: Watched, entries: ReadonlyArray<MountEntry> | Error): ProbeOutcome | null => {
    if (entries instanceof Error)
      return {ok: false, reason: `cannot read the mount table: ${entries.message}`, code: 'EMOUNTTABLE', ms: 0};
    const problem = checkMount(entries, w.pin.dir, w.pin.mount);
    return problem === null ? null : {ok: false, ...problem, ms: 0};
  };
  const mountTable = (): ReadonlyArray<MountEntry> | Error => {
    try {
      return readMountTable();
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  };

  const launch = (w: Watched, probe: () => Promise<ProbeOutcome>) => {
    const startedAt = performance.now();
    w.probes += 1;
    w.running = (async () => {
      let outcome = await probe();
      w.running = null;
      for (const event of outcome.events ?? []) {
        const {level, message} = describeEvent(probeFile(w.pin.dir, options.name), event);
        logger.log(level, message, {path: w.pin.path, event: event.kind});
      }
      // The mount may have gone while the probe ran: then the probe proved the wrong disk, or a detached one.
      if (outcome.ok)
        outcome = mountProblem(w, mountTable()) ?? outcome;
      if (outcome.ok) {
        w.provenAt = startedAt;
        logger.debug('probe passed', {path: w.pin.path, probe: w.probes, probeMs: round(outcome.ms)});
      }
      w.latest = outcome;
      evaluate();
    })();
  };

  const tick = () => {
    if (signal.aborted)
      return;
    const entries = mountTable();
    let changed = false;
    for (const w of watched) {
      const problem = mountProblem(w, entries);
      if (problem !== null) {
        w.latest = problem;
        changed = true;
      } else if (w.prober.busy) {
        logger.debug('previous probe process still exists (stuck in the kernel?); not starting another', {path: w.pin.path, pid: w.prober.busyPid});
      } else {
        launch(w, () => w.prober.probe(w.probes));
      }
    }
    if (changed)
      evaluate();
  };

  // The first probe of each path also decides its method (O_DIRECT or not).
  for (const w of watched) {
    launch(w, async () => {
      const chosen = await chooseMethod(w.prober);
      logger.info(`probe method: ${chosen.detail}`, {path: w.pin.path, method: chosen.method, file: w.prober.file});
      return chosen.first;
    });
  }
  deps.onReady?.();

  const ticker = alignedTicker(options.interval * 1000, tick);

  await new Promise<void>(resolve => {
    if (signal.aborted)
      resolve();
    else
      signal.addEventListener('abort', () => resolve(), {once: true});
  });
  ticker.stop();

  // A goodbye tells the monitor to forget us instead of fencing; only say it
  // when the disk was proven healthy just now, never while a probe is stuck.
  const pending = watched.flatMap(w => (w.running === null ? [] : [w.running]));
  if (pending.length > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(pending), new Promise(resolve => {
      timer = setTimeout(resolve, GOODBYE_WAIT_MS);
    })]);
    // Left pending, the timer would hold the event loop (and the exit) open.
    clearTimeout(timer);
  }

  if (health.state === 'healthy' && watched.every(w => !w.prober.busy && w.latest?.ok === true)) {
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

/**
 * Ticks on wall-clock multiples of the interval (every second on the second
 * by default). Every reporter on a host then probes and heartbeats within the
 * same few milliseconds, and the monitor re-arms them all in one nft
 * transaction and one wake-up, instead of one each.
 */
export function alignedTicker(intervalMs: number, tick: () => void, now: () => number = Date.now): {stop: () => void} {
  let last = Math.floor(now() / intervalMs) * intervalMs;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    const at = Math.max(last + intervalMs, Math.floor(now() / intervalMs) * intervalMs + intervalMs);
    last = at;
    timer = setTimeout(() => {
      tick();
      schedule();
    }, Math.max(0, at - now()));
  };
  schedule();
  return {stop: () => clearTimeout(timer)};
}

