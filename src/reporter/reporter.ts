import fs from 'node:fs';
import path from 'node:path';

import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {readMountTable} from '../mounts';
import type {CheckSpec} from '../probe';
import type {ScanTarget, Unwatched} from '../discovery';
import {MAX_PATHS} from '../heartbeat';
import {PROBE_SCRIPT} from '../probe/script';
import {SpawnHelper} from '../spawn';
import {DEFAULT_STATE_DIR, readFencedSince} from '../state';
import {CheckRuns} from './checks';
import {startDiscovery} from './discovered';
import {initialLife, needsMountTable, step} from './lifecycle';
import type {Effect, LifeEvent, LogLevel} from './lifecycle';
import {failingMessage, heartbeatMessage} from './messages';
import {MountChecks} from './mounts';
import {WatchedPaths} from './paths';
import {PathProbers} from './probers';
import {RejoinRuns} from './rejoin';
import {makeRuntimeDir} from './runtime';
import {Sender} from './sender';
import {logClusterRoles, logHardlinkProtection, pinAll, watchDevices} from './startup';
import {alignedTicker} from './ticker';

export type ReporterOptions = {
  /** the watched directories; the first one names the reporter by default */
  monitors: Array<string>;
  /**
   * Whose written volumes to find, every `intervalSec`: without --monitor
   * each is watched; with it, those no --monitor covers are named as not
   * watched.
   */
  discover?: {target: ScanTarget, intervalSec: number};
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
  /** --check programs, resolved at start-up (see resolveCheck) */
  checks?: Array<CheckSpec>;
  /** coordinator ports (etcd, Consul, the cluster's own) this host must not reach while fenced */
  isolate?: Array<number>;
  /** when a fence may lift: auto (default), manual, or when this program says so (resolved like a check) */
  rejoin?: {mode: 'auto' | 'manual'} | {mode: 'program', program: CheckSpec};
  /** the monitor's state directory, where it says which reporters are fenced (for the rejoin program) */
  stateDir?: string;
  /** V8 flags this process set at its start (src/daemon/v8.ts), for the log */
  v8Flags?: ReadonlyArray<string>;
};

export type ReporterDeps = {
  logger: Logger;
  /** Called once the first probe has been started: the daemon is running. */
  onReady?: () => void;
};

const REMINDER_MS = 60_000;
/** SIGTERM must end the reporter within 2 s (SPEC); a healthy probe takes milliseconds. */
const GOODBYE_WAIT_MS = 1_200;
/** A volume the service stopped writing to is watched for this many more scans: a log rotated or a file reopened is not a volume gone. */
const DISCOVERY_GRACE_SCANS = 3;

/** The wiring: start-up, then the lifecycle's decisions (lifecycle.ts) carried out, every interval until `signal`. */
export async function runReporter(deps: ReporterDeps, options: ReporterOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  const {name, interval, probeTimeout} = options;
  const checks = options.checks ?? [];
  logger.info('reporter starting', {name, monitor: options.monitors.join(','), ports: options.ports.join(','), fifo: options.fifo, interval, probeTimeout, checks: checks.length});
  if (options.v8Flags !== undefined && options.v8Flags.length > 0)
    logger.debug(`V8 flags set at start: ${options.v8Flags.join(' ')}`, {pid: process.pid, execArgv: process.execArgv.join(' ')});
  const pins = pinAll(options.monitors, options, logger, readMountTable());
  logHardlinkProtection(logger);
  const devices = watchDevices(pins, logger);
  const rejoin = options.rejoin ?? {mode: 'auto'};
  const mounts = new MountChecks(pins);
  // --monitor paths first; discovery adds and removes its own, and the heartbeat's shape follows.
  const paths = new WatchedPaths(pins, {name, pid: process.pid, ports: options.ports, interval, probeTimeout, ...(options.isolate === undefined || options.isolate.length === 0 ? {} : {isolate: options.isolate}),
    ...(rejoin.mode === 'auto' ? {} : {rejoin: rejoin.mode}), ...(options.discover === undefined ? {} : {unwatched: true as const})}, mounts, devices, logger);

  // Probers and checks start through a helper that forks them: this loop never waits for an exec, even when the disk holding perl hangs.
  const runtime = makeRuntimeDir(name);
  if (runtime.warning !== undefined)
    logger.warn(runtime.warning);
  const helperErrors = new RateLimitedLog(logger, REMINDER_MS);
  const helper = SpawnHelper.start(path.join(runtime.dir, 'spawn'), message => helperErrors.log('error', 'helper', message));
  const scriptFile = path.join(runtime.dir, 'probe.pl');
  fs.writeFileSync(scriptFile, PROBE_SCRIPT, {mode: 0o600});
  const sender = new Sender(options.fifo, logger, REMINDER_MS);
  // winston formats a line before its transport drops it by level: lines a tick are not built for nothing.
  const log = (level: LogLevel, message: string, fields: Record<string, unknown>) => logger.isLevelEnabled(level) && logger.log(level, message, fields);

  // Written volumes nothing watches (discovery): said in every heartbeat (the monitor keeps the last list while the reporter fails).
  let unwatched: Array<Unwatched> = [];
  let life = initialLife({name, reminderMs: REMINDER_MS, rejoin: rejoin.mode});
  let finish!: (effect: Effect & {type: 'finish'}) => void;
  const finished = new Promise<Effect & {type: 'finish'}>(resolve => {
    finish = resolve;
  });
  const dispatch = (event: LifeEvent) => {
    const next = step(life, event, performance.now());
    life = next.life;
    for (const effect of next.effects)
      perform(effect);
  };
  const probers = new PathProbers({
    targets: paths.targets,
    devices: devices.byPath, timeoutMs: probeTimeout * 1000, startStream: argv => helper.stream(argv), scriptFile,
    mountProblem: watched => mounts.now().get(watched), dispatch,
  });
  const checkRuns = new CheckRuns(checks, probeTimeout * 1000, (argv, runOptions) => helper.run(argv, runOptions), dispatch);
  const rejoinRuns = rejoin.mode === 'program' ? new RejoinRuns(rejoin.program, name, (argv, runOptions) => helper.run(argv, runOptions), dispatch) : null;
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  const deviceStats = () => devices.all.flatMap(watch => (watch.latest === null ? [] : [watch.latest]));
  const perform = (effect: Effect) => {
    switch (effect.type) {
      case 'start-prober':
        return probers.start(effect.path, effect.prober);
      case 'probe':
        return probers.probe(effect.path, effect.prober, effect.seq, effect.method);
      case 'abandon-prober':
      case 'close-prober':
        return probers.abandon(effect.path, effect.prober);
      case 'run-check':
        return checkRuns.run(effect.text);
      case 'run-rejoin':
        return rejoinRuns?.run(effect.fencedSince);
      case 'heartbeat':
        if (sender.send(heartbeatMessage(paths.shape, {seq: effect.seq, sentAt: Date.now(), probeMs: effect.probeMs, devices: deviceStats(), rejoin: effect.rejoin, unwatched})).ok)
          log('debug', 'heartbeat sent', {seq: effect.seq, probeMs: effect.probeMs});
        return;
      case 'failing':
        return void sender.send(failingMessage(paths.shape, effect.reason, Date.now(), deviceStats()));
      case 'log':
        return void log(effect.level, effect.message, effect.fields);
      case 'finish':
        return finish(effect);
    }
  };
  const tick = () => {
    for (const watch of devices.all)
      watch.tick();
    dispatch({type: 'tick', ...(needsMountTable(life) ? {mounts: mounts.now()} : {}), restated: probers.restated(), pids: new Map([...probers.pids(), ...checkRuns.pids()]),
      ...(rejoinRuns === null ? {} : {fencedSince: readFencedSince(stateDir, name)})});
  };

  for (const pin of pins)
    dispatch({type: 'watch', path: pin.path, dir: pin.dir});
  const discovery = options.discover === undefined ? null : startDiscovery({
    ...options.discover, runtimeDir: runtime.dir, pins, graceScans: DISCOVERY_GRACE_SCANS, maxPaths: MAX_PATHS, timeoutMs: probeTimeout * 1000,
    startProcess: (argv, runOptions) => helper.run(argv, runOptions),
    mounts: () => mounts.table(),
    watch: pin => {
      paths.add(pin);
      dispatch({type: 'watch', path: pin.path, dir: pin.dir});
    },
    unwatch: watchedPath => {
      dispatch({type: 'unwatch', path: watchedPath});
      paths.remove(watchedPath);
    },
    unwatched: list => {
      unwatched = list;
    },
    log,
  }, (message, fields) => logger.info(message, fields));
  logClusterRoles(logger, options.isolate ?? [], rejoin, stateDir);
  for (const check of checks) {
    logger.info(`check: ${check.text} (${check.argv[0]}, no shell, every interval, killed with its process group after ${probeTimeout} s)`, {check: check.text});
    dispatch({type: 'add-check', text: check.text});
  }
  // The first round at once; the first answer of each path also decides its method (O_DIRECT or not).
  tick();
  deps.onReady?.();
  const ticker = alignedTicker(interval * 1000, tick);
  await new Promise<void>(resolve => {
    if (signal.aborted)
      resolve();
    else
      signal.addEventListener('abort', () => resolve(), {once: true});
  });
  ticker.stop();
  discovery?.stop();

  // A goodbye tells the monitor to forget us instead of fencing: only after the disks and the service were proven just now.
  const timer = setTimeout(() => dispatch({type: 'stop-timeout'}), GOODBYE_WAIT_MS);
  dispatch({type: 'stop'});
  const {goodbye, reason} = await finished;
  clearTimeout(timer);
  if (goodbye) {
    const result = sender.send({v: 1, kind: 'goodbye', name, pid: process.pid});
    logger.info(result.ok ? 'stopping: goodbye sent, the monitor forgets this reporter' : 'stopping: goodbye could not be delivered', {name});
  } else {
    logger.warn('stopping while failing: no goodbye, so a fence stays in place', {name, reason});
  }
  sender.close();
  mounts.close();
  // Ends the helper; its exit kills every prober and check still running. One stuck in the kernel stays until its I/O ends.
  helper.close();
  fs.rmSync(runtime.dir, {recursive: true, force: true});
  for (const watch of devices.all)
    watch.close();
}
