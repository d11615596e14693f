import fs from 'node:fs';
import path from 'node:path';

import {StartupError} from '../errors';
import {MAX_LINE_BYTES, MAX_PATHS, PATH_FIELD_MAX, REASON_MAX, encodeMessage, isFailing, isHeartbeat} from '../heartbeat';
import type {DeviceStats, Failing, Heartbeat, PathInfo} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {Checker, DeviceWatch, PROBE_ENV, Prober, checkMount, chooseMethod, describeMount, logfileWarnings, pinPath, probeFile, readMountTable, resolveDevice} from '../probe';
import type {CheckOutcome, CheckSpec, DeviceSample, FileEvent, MountEntry, PathPin, ProbeOutcome, Runner} from '../probe';
import {PROBE_SCRIPT} from '../probe/script';
import {SpawnHelper} from '../spawn';
import {FifoWriter} from '../transport';
import type {SendResult} from '../transport';
import {composeReason, describeCheck, describeProbe} from './verdict';
import type {DeviceWindow, Finding} from './verdict';
import {makeRuntimeDir} from './runtime';

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
  /** --check programs, resolved at start-up (see resolveCheck) */
  checks?: Array<CheckSpec>;
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

/** One watched path: its pin, its own probe child (never stacked), its device, and its latest result. */
type Watched = {
  pin: PathPin;
  prober: Prober;
  device: DeviceWatch | null;
  /** the device's counters when the latest probe started: the probe's window opens there */
  startSample: DeviceSample | null;
  /** the latest finished probe or mount check; null before the first */
  latest: ProbeOutcome | null;
  /** when the latest passing probe started (performance.now()) */
  provenAt: number;
  probes: number;
  running: Promise<void> | null;
};

/** One --check: its own child (never stacked) and its latest result. */
type Checked = {
  checker: Checker;
  latest: CheckOutcome | null;
  provenAt: number;
  running: Promise<void> | null;
};

type Health = {state: 'starting' | 'healthy' | 'failing', key: string, reason: string};

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

/** The largest numbers a device entry can carry, for the start-up size check. */
function worstStats(device: string, name: string): DeviceStats {
  return {device, name, inflight: 2 ** 31, ios: Number.MAX_SAFE_INTEGER, windowMs: 86_400_000.25, done: 2 ** 40, busyMs: 86_400_000.25, awaitMs: 1e9 + 0.25, quietMs: 1e12 + 0.25};
}

/** procfs: the kernel's name of a process's program, set when its exec succeeds; null once it is gone. */
function commOf(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

function clipEnd(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}\u2026`;
}

export async function runReporter(deps: ReporterDeps, options: ReporterOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  const checks = options.checks ?? [];
  logger.info('reporter starting', {name: options.name, monitor: options.monitors.join(','), ports: options.ports.join(','), fifo: options.fifo, interval: options.interval, probeTimeout: options.probeTimeout, checks: checks.length});
  const pins = pinAll(options, logger, readMountTable());
  logHardlinkProtection(logger);

  // Each pinned device's own counters, read every interval from sysfs (never from the device).
  const devices = new Map<string, DeviceWatch>();
  const deviceOf = (pin: PathPin): DeviceWatch | null => {
    const resolved = resolveDevice(pin.mount, pin.device);
    if (resolved.node === null) {
      logger.info(`no device evidence for ${pin.path}: ${resolved.why}`, {path: pin.path});
      return null;
    }
    const node = resolved.node;
    let watch = devices.get(node.device);
    if (watch === undefined) {
      try {
        watch = new DeviceWatch(node);
      } catch (error) {
        logger.warn(`no device evidence for ${pin.path}: cannot read ${node.dir}: ${(error as Error).message}`, {path: pin.path});
        return null;
      }
      devices.set(node.device, watch);
    }
    logger.info(`device evidence for ${pin.path}: ${node.name} (${node.device}${node.detail === '' ? '' : `; ${node.detail}`}), its counters read from ${node.dir}`, {path: pin.path, device: node.device, deviceName: node.name});
    return watch;
  };

  const limited = new RateLimitedLog(logger, REMINDER_MS);
  // Probes and checks start through a helper that forks them: this loop never waits for an exec, even when the disk holding perl hangs.
  const runtime = makeRuntimeDir(options.name);
  if (runtime.warning !== undefined)
    logger.warn(runtime.warning);
  const helperError = (message: string) => limited.log('error', 'helper', message);
  const helper = SpawnHelper.start(path.join(runtime.dir, 'probes'), helperError, {env: PROBE_ENV});
  const runner: Runner = (argv, runOptions) => helper.run(argv, runOptions);
  const scriptFile = path.join(runtime.dir, 'probe.pl');
  fs.writeFileSync(scriptFile, PROBE_SCRIPT, {mode: 0o600});
  // Checks run with the reporter's own environment: a helper of their own starts from it (a request carries no environment).
  const checkHelper = checks.length === 0 ? null : SpawnHelper.start(path.join(runtime.dir, 'checks'), helperError);
  const checkRunner: Runner = (argv, runOptions) => checkHelper!.run(argv, runOptions);

  const watched: Array<Watched> = pins.map(pin => ({
    pin,
    prober: new Prober({dir: pin.dir, name: options.name, dev: pin.dev, ino: pin.ino}, 'direct', options.probeTimeout * 1000, runner, scriptFile),
    device: deviceOf(pin),
    startSample: null,
    latest: null,
    provenAt: -Infinity,
    probes: 0,
    running: null,
  }));
  const checked: Array<Checked> = checks.map(spec => ({checker: new Checker(spec, options.probeTimeout * 1000, checkRunner, {}), latest: null, provenAt: -Infinity, running: null}));
  for (const c of checked)
    logger.info(`check: ${c.checker.spec.text} (${c.checker.spec.argv[0]}, no shell, every interval, killed with its process group after ${options.probeTimeout} s)`, {check: c.checker.spec.text});

  const writer = new FifoWriter(options.fifo);
  let health: Health = {state: 'starting', key: '', reason: ''};
  let seq = 0;
  /** Why the last send failed, or null while sends succeed: logs once per change, then reminders. */
  let sendFailure: string | null = null;
  let failingSince = 0;
  /** When the last heartbeat was decided: the next one needs a proof of every path and check started after it. */
  let lastBeatAt = -Infinity;
  let ticks = 0;

  let paths: Array<PathInfo> | undefined = pins.map(pathInfo);
  let sendDevices = devices.size > 0;
  const worstCase = (withDevices: boolean): Heartbeat => ({
    v: 1, kind: 'heartbeat', name: options.name, pid: process.pid, ports: options.ports, interval: options.interval, probeTimeout: options.probeTimeout,
    seq: Number.MAX_SAFE_INTEGER, sentAt: Date.now() * 10, probeMs: 1e9 + 0.25,
    ...(paths === undefined ? {} : {paths}),
    ...(withDevices ? {devices: [...devices.values()].map(w => worstStats(w.node.device, w.node.name))} : {}),
  });
  // The monitor drops a heartbeat that fails its schema (and then fences): better without devices or paths than no heartbeat.
  const problem = (message: Heartbeat): string | null => {
    const errors: Array<string> = [];
    if (!isHeartbeat(message, {errors}))
      return errors.join('; ');
    return Buffer.byteLength(JSON.stringify(message)) + 1 > MAX_LINE_BYTES ? `they would make a heartbeat longer than ${MAX_LINE_BYTES} bytes (PIPE_BUF)` : null;
  };
  if (sendDevices) {
    const why = problem(worstCase(true));
    if (why !== null) {
      logger.warn(`heartbeats go without the devices' counters: ${why}`);
      sendDevices = false;
    }
  }
  const pathProblem = problem(worstCase(false));
  if (pathProblem !== null) {
    logger.warn(`heartbeats go without the watched paths' devices: ${pathProblem}`);
    paths = undefined;
  }
  const deviceStats = (): Array<DeviceStats> | undefined => {
    if (!sendDevices)
      return undefined;
    const list = [...devices.values()].flatMap(w => (w.latest === null ? [] : [w.latest]));
    return list.length > 0 ? list : undefined;
  };

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

  /** The failing word, cut to fit one atomic FIFO write (a check's output can be long, in any script). */
  const failingMessage = (reason: string): Failing => {
    const list = deviceStats();
    let message: Failing = {v: 1, kind: 'failing', name: options.name, pid: process.pid, sentAt: Date.now(), reason: clipEnd(reason, REASON_MAX), ...(list === undefined ? {} : {devices: list})};
    for (let i = 0; i < 8; i++) {
      const excess = Buffer.byteLength(JSON.stringify(message)) + 1 - MAX_LINE_BYTES;
      if (excess <= 0 && isFailing(message))
        return message;
      message = {...message, reason: clipEnd(message.reason, Math.max(64, message.reason.length - Math.max(excess, 0) - 8))};
    }
    const {devices: _dropped, ...bare} = message;
    return {...bare, reason: clipEnd(bare.reason, 512)};
  };
  let saidTick = -1;
  let saidKey = '';
  /** At most once a tick (and at once when what is wrong changes): the monitor keeps it for the fence's reason. */
  const sayFailing = (key: string, reason: string) => {
    if (saidTick === ticks && saidKey === key)
      return;
    saidTick = ticks;
    saidKey = key;
    send(failingMessage(reason));
  };

  const transition = (outcome: {ok: true, ms: number} | {ok: false, key: string, reason: string, code: string}) => {
    if (outcome.ok) {
      if (health.state !== 'healthy') {
        if (health.state === 'failing')
          logger.info('healthy again: heartbeats resume', {name: options.name, probeMs: round(outcome.ms), failedForSeconds: round((performance.now() - failingSince) / 1000)});
        else
          logger.info('healthy: sending heartbeats', {name: options.name, probeMs: round(outcome.ms)});
        limited.forget('failing');
      }
      health = {state: 'healthy', key: '', reason: ''};
      return;
    }

    if (health.state !== 'failing' || health.key !== outcome.key) {
      if (health.state !== 'failing')
        failingSince = performance.now();
      logger.error(`failing: ${outcome.reason}; no heartbeat until it passes`, {name: options.name, code: outcome.code});
      limited.mark('failing');
    } else {
      logger.debug(`still failing: ${outcome.reason}`, {name: options.name});
      limited.log('warn', 'failing', `still failing: ${outcome.reason}`, {name: options.name, failingForSeconds: round((performance.now() - failingSince) / 1000)});
    }
    health = {state: 'failing', key: outcome.key, reason: outcome.reason};
  };

  const beat = (probeMs: number) => {
    seq += 1;
    const list = deviceStats();
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
      ...(list === undefined ? {} : {devices: list}),
    };
    if (send(heartbeat).ok)
      logger.debug('heartbeat sent', {seq, probeMs: heartbeat.probeMs});
  };

  /** A failing probe in words, with what its device did from the probe's start until now. */
  const findingOf = (w: Watched): Finding => {
    const outcome = w.latest as ProbeOutcome & {ok: false};
    // Still not perl: its exec is stuck, on the disk that holds perl (the root disk, on AWS), not on the watched one.
    const comm = outcome.code === 'ETIMEDOUT' && w.prober.busyPid !== undefined ? commOf(w.prober.busyPid) : null;
    if (comm !== null && comm !== 'perl')
      return describeProbe(w.pin.path, {...outcome, code: 'ENOSTART', reason: `${outcome.reason} before perl started (its exec is stuck: does the disk holding perl, often the root disk, answer?)`}, null);
    let window: DeviceWindow | null = null;
    if (w.device !== null && w.startSample !== null) {
      const now = w.device.sample();
      // A timeout is judged over the probe's own life; an error over the last few seconds (the error took a millisecond).
      const from = outcome.code === 'ETIMEDOUT' ? w.startSample : w.device.lookback() ?? w.startSample;
      if (now !== null)
        window = {name: w.device.node.name, from, to: now, progressAt: w.device.quietSince()};
    }
    return describeProbe(w.pin.path, outcome, window);
  };

  /**
   * Healthy only when every path's latest probe and every check passed; a
   * heartbeat only when each has passed with a run started after the last
   * heartbeat, so one still in flight holds the heartbeat back, and one round
   * gives one heartbeat.
   */
  const evaluate = () => {
    const findings: Array<{finding: Finding, code: string}> = [];
    for (const w of watched) {
      if (w.latest !== null && !w.latest.ok)
        findings.push({finding: findingOf(w), code: w.latest.code});
    }
    for (const c of checked) {
      if (c.latest !== null && !c.latest.ok)
        findings.push({finding: describeCheck(c.checker.spec.text, c.latest), code: c.latest.code});
    }
    if (findings.length > 0) {
      if (signal.aborted)
        return;
      const key = findings.map(f => f.finding.key).join('\n');
      const reason = composeReason(findings.map(f => f.finding));
      transition({ok: false, key, reason, code: findings[0]!.code});
      sayFailing(key, reason);
      return;
    }
    if (watched.some(w => w.latest === null) || checked.some(c => c.latest === null))
      return;
    if (watched.some(w => w.provenAt <= lastBeatAt) || checked.some(c => c.provenAt <= lastBeatAt))
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
    const found = checkMount(entries, w.pin.dir, w.pin.mount);
    return found === null ? null : {ok: false, ...found, ms: 0};
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
    w.startSample = w.device?.sample(startedAt) ?? null;
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

  const launchCheck = (c: Checked) => {
    const startedAt = performance.now();
    c.running = (async () => {
      const outcome = await c.checker.run();
      c.running = null;
      if (outcome.ok) {
        c.provenAt = startedAt;
        logger.debug('check passed', {check: c.checker.spec.text, run: c.checker.runs, checkMs: round(outcome.ms)});
      }
      c.latest = outcome;
      evaluate();
    })();
  };

  const tick = () => {
    if (signal.aborted)
      return;
    ticks += 1;
    for (const watch of devices.values())
      watch.tick();
    const entries = mountTable();
    // Something stuck and failing: its reason (the device's evidence) is said again with this tick's counters.
    let reconsider = false;
    for (const w of watched) {
      const found = mountProblem(w, entries);
      if (found !== null) {
        w.latest = found;
        reconsider = true;
      } else if (w.prober.busy) {
        logger.debug('previous probe process still exists (stuck in the kernel?); not starting another', {path: w.pin.path, pid: w.prober.busyPid});
        reconsider ||= w.latest?.ok === false;
      } else {
        launch(w, () => w.prober.probe(w.probes));
      }
    }
    for (const c of checked) {
      if (c.checker.busy) {
        logger.debug('previous check still running; not starting another', {check: c.checker.spec.text, pid: c.checker.busyPid});
        reconsider ||= c.latest?.ok === false;
      } else {
        launchCheck(c);
      }
    }
    if (reconsider)
      evaluate();
  };

  for (const watch of devices.values())
    watch.tick();
  // The first probe of each path also decides its method (O_DIRECT or not).
  for (const w of watched) {
    launch(w, async () => {
      const chosen = await chooseMethod(w.prober);
      logger.info(`probe method: ${chosen.detail}`, {path: w.pin.path, method: chosen.method, file: w.prober.file});
      return chosen.first;
    });
  }
  for (const c of checked)
    launchCheck(c);
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
  // when the disks and the service were proven healthy just now, never while a probe is stuck.
  const pending = [...watched, ...checked].flatMap(u => (u.running === null ? [] : [u.running]));
  if (pending.length > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(pending), new Promise(resolve => {
      timer = setTimeout(resolve, GOODBYE_WAIT_MS);
    })]);
    // Left pending, the timer would hold the event loop (and the exit) open.
    clearTimeout(timer);
  }

  const allPassed = watched.every(w => !w.prober.busy && w.latest?.ok === true) && checked.every(c => !c.checker.busy && c.latest?.ok === true);
  if (health.state === 'healthy' && allPassed) {
    const result = send({v: 1, kind: 'goodbye', name: options.name, pid: process.pid});
    logger.info(result.ok ? 'stopping: goodbye sent, the monitor forgets this reporter' : 'stopping: goodbye could not be delivered', {name: options.name});
  } else {
    logger.warn('stopping while failing: no goodbye, so a fence stays in place', {name: options.name, reason: health.reason});
  }
  writer.close();
  // Ends the helpers; their exit kills any check still running. A probe stuck in the kernel stays until its I/O ends.
  helper.close();
  checkHelper?.close();
  fs.rmSync(runtime.dir, {recursive: true, force: true});
  for (const watch of devices.values())
    watch.close();
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

