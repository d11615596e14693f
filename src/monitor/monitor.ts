import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

import {StartupError} from '../errors';
import {IptablesFirewall, NftablesFirewall} from '../fencing';
import type {ApplyResult, Family, Firewall, KernelView, ReleaseResult, Runner} from '../fencing';
import {LineDecoder} from '../heartbeat';
import type {Message} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import type {FirewallChoice} from '../options';
import {mountOf, readMountTable} from '../mounts';
import {SpawnHelper} from '../spawn';
import {FencedFiles, METRICS_FILE, SNAPSHOT_VERSION, copyAtomicAsync, emptyRejections, readSnapshot, renderMetricsTo, writeAtomicChunks, writeSnapshot} from '../state';
import type {Snapshot} from '../state';
import {ensureFifo, openFifoReader} from '../transport';
import {Applier} from './applier';
import {CutSchedule} from './cuts';
import {SideEffects} from './effects';
import {Registry, systemClock} from './registry';
import type {Transition} from './registry';

export type MonitorOptions = {
  fifo: string;
  stateDir: string;
  /** seconds */
  timeout: number;
  recover: number;
  protectPorts: Array<number>;
  maxReporters: number;
  onChange?: string;
  metricsFile?: string;
  firewall: FirewallChoice;
  /** Tests run one family where the kernel lacks the other (iptables only; nftables' inet table is both). */
  families?: ReadonlyArray<Family>;
  reconcileMs?: number;
};

export type MonitorDeps = {
  logger: Logger;
  /** Called once the FIFO is open and the firewall is in its start-up state. */
  onReady?: () => void;
};

const SNAPSHOT_EVERY_MS = 1_000;
/** nftables notices a deleted table at once (nft monitor); the read-back catches the rest. */
const RECONCILE_MS = {nftables: 10_000, iptables: 5_000};
const START_APPLY_WAIT_MS = 15_000;
const STOP_APPLY_WAIT_MS = 5_000;
const INSPECT_TRIES = 3;
const INSPECT_RETRY_MS = 1_000;
/** Re-arms wait this long to share a transaction (the applier's batch). */
const BATCH_MS = 100;

/** Start-up: nftables where it works (auto), else iptables. */
async function chooseFirewall(options: MonitorOptions, helper: SpawnHelper, run: Runner, logger: Logger): Promise<Firewall> {
  if (options.firewall !== 'iptables') {
    const nft = new NftablesFirewall({logger, helper});
    const started = await nft.start();
    if (started.ok)
      return nft;
    await nft.close();
    if (options.firewall === 'nftables')
      throw new StartupError(`--firewall=nftables: ${started.detail}`);
    logger.warn(`nftables is not usable here (${started.detail}): falling back to iptables, where the monitor itself must be running to fence`);
  }
  return new IptablesFirewall(run, options.families, logger);
}

/** Spawn directories of monitors that are gone (a kill -9 leaves one behind). */
function removeStaleSpawnDirs(stateDir: string): void {
  for (const entry of fs.readdirSync(stateDir)) {
    const match = /^\.spawn-(\d+)$/.exec(entry);
    if (match === null || Number(match[1]) === process.pid)
      continue;
    try {
      process.kill(Number(match[1]), 0);
    } catch {
      fs.rmSync(path.join(stateDir, entry), {recursive: true, force: true});
    }
  }
}

function fsType(dir: string): string | null {
  try {
    return mountOf(readMountTable(), fs.realpathSync(dir))?.fstype ?? null;
  } catch {
    return null;
  }
}

/**
 * V8 lets the old generation grow by 20 % past what survived the last full
 * collection, not by its default (up to 4x on a small heap). A busy monitor's
 * garbage (heartbeats kept for the 100 ms re-arm batch outlive the 2 MB young
 * generation) then never piles up: with 1000 reporters at 1 Hz RSS max 89 ->
 * 71 MB at the same CPU (3.0 -> 3.2 % of a core). V8 reads the flag at each
 * collection, so it works set here, for the bundle and the standalone
 * executable alike (NODE_OPTIONS does not take it).
 */
const HEAP_GROWING_PERCENT = 20;

export async function runMonitor(deps: MonitorDeps, options: MonitorOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  fs.mkdirSync(options.stateDir, {recursive: true, mode: 0o755});
  ensureFifo(options.fifo);
  const type = fsType(options.stateDir);
  if (type !== null && type !== 'tmpfs')
    logger.warn(`--state-dir=${options.stateDir} is on ${type}, not tmpfs: the pulse stops when that disk hangs`);

  let previous: Snapshot | null = null;
  try {
    previous = readSnapshot(options.stateDir);
  } catch (error) {
    logger.warn(`ignoring the previous snapshot: ${(error as Error).message}`);
  }

  const startedAt = Date.now();
  const limited = new RateLimitedLog(logger, 10_000);
  removeStaleSpawnDirs(options.stateDir);
  const helper = SpawnHelper.start(path.join(options.stateDir, `.spawn-${process.pid}`), message => limited.log('error', 'helper', message));
  const run: Runner = (argv, runOptions) => helper.run(argv, runOptions).result;
  let firewall: Firewall;
  try {
    firewall = await chooseFirewall(options, helper, run, logger);
  } catch (error) {
    helper.close();
    throw error;
  }
  const effects = new SideEffects(run, logger, options.onChange);
  const cuts = new CutSchedule(helper, logger, firewall.holdsDeadlines);
  const fencedFiles = new FencedFiles(options.stateDir);
  // The state directory is tmpfs: these writes cannot hang.
  const tellReporter = (name: string) => {
    const record = registry.reporters.get(name);
    try {
      if (record !== undefined && record.life.state === 'fenced')
        fencedFiles.set(name, record.life.since);
      else
        fencedFiles.clear(name);
    } catch (error) {
      limited.log('error', 'fenced-file', `cannot tell ${name} it is fenced: ${(error as Error).message}`);
    }
  };

  let firewallOk = true;
  /** How early, at most, the kernel may let an element written by the last apply run out. */
  let earlyMs = 0;
  // Hooks wait for the apply that carries their change: the fence goes in first.
  const transitions: Array<Transition> = [];
  let inNextApply = 0;
  const onApplied = (result: ApplyResult) => {
    const wasOk = firewallOk;
    if (result.ok !== firewallOk) {
      firewallOk = result.ok;
      scheduleSnapshot();
    }
    if (result.ok) {
      earlyMs = result.earlyMs;
      // What the kernel now holds: where it runs out before the registry's own deadline, the kernel's wins.
      if (firewall.holdsDeadlines)
        registry.acknowledged(result.earlyMs);
      if (!wasOk)
        logger.info('firewall updated again after earlier failures');
      if (result.held !== undefined)
        cuts.held(result.held);
      // Without a cutter, waiting clients are left to ss -K: an exec, which a hung disk can stall.
      if (result.newlyFenced.length > 0 && !cuts.cutting)
        effects.closeConnections(result.newlyFenced);
    } else {
      limited.log('error', `fail:${firewall.name}`, `firewall update failed: ${result.detail}; retrying`, {firewall: firewall.name});
    }
    for (const transition of transitions.splice(0, inNextApply))
      effects.hook(transition);
    inNextApply = 0;
  };

  const registry = new Registry({
    timeoutMs: options.timeout * 1000,
    recover: options.recover,
    protectPorts: new Set(options.protectPorts),
    maxReporters: options.maxReporters,
  }, {
    changed: urgency => applier.schedule(urgency),
    transition: transition => {
      scheduleSnapshot();
      tellReporter(transition.name);
      if (transition.state !== 'forgotten')
        transitions.push(transition);
    },
    log: (level, message, meta) => logger.log(level, message, meta ?? {}),
    refuse: (key, message, meta) => limited.log('warn', key, message, meta),
  }, systemClock);

  const applier = new Applier({
    firewall,
    desired: () => {
      // Read first: a deadline that ran out while the monitor was stopped becomes a fence (and its hook) here.
      const list = registry.desired();
      inNextApply = transitions.length;
      return list;
    },
    clock: systemClock,
    batchMs: BATCH_MS,
    reconcileMs: options.reconcileMs ?? RECONCILE_MS[firewall.name],
    onApplied,
  });
  firewall.onDrift(() => applier.checkSoon());

  const decoder = new LineDecoder({
    onMessage: message => handle(message),
    onReject: rejection => limited.log('warn', `reject:${rejection.reason}`, `dropped a FIFO line (${rejection.reason}): ${rejection.detail}`, {reason: rejection.reason}),
  });

  // iptables has no outbound chain of ebsmon's: a reporter's --isolate cannot be honoured there. Said once per reporter.
  const isolationRefused = new Set<string>();
  const handle = (message: Message) => {
    switch (message.kind) {
      case 'heartbeat':
        if (!firewall.holdsDeadlines && message.isolate !== undefined && !isolationRefused.has(message.name)) {
          isolationRefused.add(message.name);
          logger.warn(`${message.name} asks that this host be cut from port(s) ${message.isolate.join(',')} while fenced, but --firewall=iptables does not isolate: only its own ports are fenced, and a fenced node can still reach its coordinator (use nftables)`, {reporter: message.name});
        }
        registry.heartbeat(message);
        break;
      case 'failing':
        registry.failing(message);
        break;
      case 'goodbye':
        registry.goodbye(message);
        break;
      case 'unblock':
        registry.unblock(message);
        scheduleSnapshot();
        break;
    }
  };

  const buildSnapshot = (): Snapshot => ({
    v: SNAPSHOT_VERSION,
    monitor: {
      pid: process.pid,
      startedAt,
      writtenAt: Date.now(),
      timeout: options.timeout,
      recover: options.recover,
      protectPorts: options.protectPorts,
      heartbeats: registry.heartbeatsAccepted,
      linesRejected: {...emptyRejections(), ...Object.fromEntries(Object.entries(decoder.counters).filter(([k]) => k !== 'accepted'))},
      firewallOk,
      firewall: firewall.name,
      deadlinesInKernel: firewall.holdsDeadlines,
      socketCutter: cuts.status,
    },
    reporters: registry.snapshot(),
  });

  // --metrics-file may sit on a disk (node_exporter's textfile directory): copied off the loop, one at a time.
  const metricsFile = options.metricsFile === undefined ? null : copyAtomicAsync(options.metricsFile);
  const metricsPath = path.join(options.stateDir, METRICS_FILE);
  const writeState = () => {
    const snapshot = buildSnapshot();
    try {
      // The state directory is tmpfs: these writes cannot hang.
      writeSnapshot(options.stateDir, snapshot);
      writeAtomicChunks(metricsPath, write => renderMetricsTo(snapshot, snapshot.monitor.writtenAt, write));
      metricsFile?.(metricsPath);
    } catch (error) {
      limited.log('error', 'snapshot', `cannot write the state snapshot: ${(error as Error).message}`);
    }
  };

  let snapshotPending = false;
  // Coalesces a burst of changes (1000 fences at once) into one write.
  function scheduleSnapshot() {
    if (snapshotPending)
      return;
    snapshotPending = true;
    setImmediate(() => {
      snapshotPending = false;
      writeState();
    });
  }

  const kernel = await inspect(firewall, logger);
  if (kernel !== 'unreadable' && kernel.ports.size > 0) {
    logger.info(`found ${kernel.ports.size} ebsmon port(s) in the ${firewall.name} firewall`, {ports: [...kernel.ports.keys()].join(',')});
    const known = new Set((previous?.reporters ?? []).flatMap(r => r.ports));
    const orphans = [...kernel.ports.keys()].filter(port => !known.has(port));
    if (orphans.length > 0)
      logger.warn(`ebsmon port(s) ${orphans.join(',')} in the firewall have no reporter in the previous snapshot: adopted as the kernel holds them (a fenced one stays fenced until its reporter heartbeats or an operator unblocks it)`);
  }
  registry.adopt(previous?.reporters ?? [], kernel, firewall.holdsDeadlines);
  fencedFiles.sync(new Map([...registry.reporters.values()].flatMap(r => (r.life.state === 'fenced' ? [[r.name, r.life.since] as const] : []))));
  if (previous !== null) {
    const fenced = registry.snapshot().filter(r => r.state === 'fenced').map(r => r.name);
    logger.info(`adopted ${previous.reporters.length} reporter(s) from the previous snapshot`, {fenced: fenced.join(',') || '(none)', deadlines: firewall.holdsDeadlines ? 'as the kernel holds them' : `${options.timeout} s to check in`});
  }
  await Promise.race([applier.settled(), new Promise(resolve => setTimeout(resolve, START_APPLY_WAIT_MS).unref())]);
  if (firewall instanceof NftablesFirewall) {
    await firewall.learnCapabilities();
    logger.info(`firewall: nftables, table inet ebsmon; the kernel holds every deadline (re-arm: ${firewall.rearmMethod})`);
  } else {
    logger.info('firewall: iptables, chain EBSMON; deadlines are kept by this monitor, which must be running to fence');
  }
  applier.startReconciling();
  // Started once the kernel holds every adopted deadline: it is handed them all before it takes over from a predecessor.
  await cuts.start();

  const reader = openFifoReader(options.fifo, chunk => decoder.push(chunk));
  const pulse = setInterval(writeState, SNAPSHOT_EVERY_MS);
  writeState();
  logger.info('monitor running', {fifo: options.fifo, stateDir: options.stateDir, firewall: firewall.name, timeout: options.timeout, recover: options.recover, protectPorts: options.protectPorts.join(',')});
  deps.onReady?.();

  await new Promise<void>(resolve => {
    if (signal.aborted)
      resolve();
    else
      signal.addEventListener('abort', () => resolve(), {once: true});
  });

  reader.close();
  clearInterval(pulse);
  const released = await leaveFirewall(registry, applier, firewall, logger, BATCH_MS + earlyMs);
  cuts.stop(released);
  registry.close();
  await firewall.close();
  helper.close();
  writeState();
  const fenced = registry.snapshot().filter(r => r.state === 'fenced').map(r => r.name);
  logger.info(fenced.length === 0 ? 'monitor stopped' : 'monitor stopped; fences stay in place for the next monitor', {fenced: fenced.join(',') || '(none)'});
}

/** What the kernel holds at start-up, read a few times before giving up: adoption must not guess. */
async function inspect(firewall: Firewall, logger: Logger): Promise<KernelView | 'unreadable'> {
  for (let attempt = 1; ; attempt++) {
    const kernel = await firewall.inspect();
    if (kernel !== null)
      return kernel;
    if (attempt >= INSPECT_TRIES) {
      logger.error(`cannot read the ${firewall.name} firewall at start-up (${INSPECT_TRIES} tries)${firewall.holdsDeadlines ? ': every reporter the previous monitor knew stays fenced until it heartbeats again' : ''}`);
      return 'unreadable';
    }
    await new Promise(resolve => setTimeout(resolve, INSPECT_RETRY_MS));
  }
}

/**
 * A clean stop fences nothing that is healthy: healthy reporters' ports are
 * left open with no deadline until the next monitor re-arms them. But the
 * kernel's word wins over the registry's: a deadline that has run out, in the
 * registry or in the kernel, is a fence, and so is one that is due within an
 * interval of a reporter that has missed its heartbeat (nothing would re-arm
 * it in time). The ports are released only where the kernel still holds
 * them alive at the moment it commits. Each reporter's fate is logged.
 */
async function leaveFirewall(registry: Registry, applier: Applier, firewall: Firewall, logger: Logger, marginMs: number): Promise<{clients: Array<number>, voice: Array<number>}> {
  registry.settleAll();
  registry.fenceDueAtStop(marginMs);
  const timeout = <T>(work: Promise<T>) => Promise.race([work, new Promise<null>(resolve => setTimeout(() => resolve(null), STOP_APPLY_WAIT_MS).unref())]);
  const final = await timeout(applier.stop(registry.desired()));
  let released: ReleaseResult | null = null;
  if (final !== null && final.ok) {
    released = await timeout(firewall.release(registry.releasable()));
    if (released !== null && 'expired' in released)
      registry.expiredInKernel(released.expired, released.voiceExpired);
  }
  if (final === null || !final.ok || released === null || 'failed' in released) {
    const why = final === null || released === null ? 'no answer' : !final.ok ? final.detail : 'failed' in released ? released.failed : '';
    logger.error(`could not write the stopping state to the firewall (${why}): every deadline the kernel holds runs on, so a reporter left unproven is fenced when its deadline runs out`);
  }
  const open = new Set(released !== null && 'opened' in released ? released.opened : []);
  const voiceOpen = new Set(released !== null && 'opened' in released ? released.voiceOpened : []);
  for (const reporter of registry.snapshot()) {
    const meta = {reporter: reporter.name, ports: reporter.ports.join(',')};
    if (reporter.state === 'fenced')
      logger.warn(`${reporter.name}: left fenced: its deadline ran out at ${new Date(reporter.fencedSince ?? Date.now()).toISOString()} (${reporter.reason})`, meta);
    else if (reporter.state === 'overridden')
      logger.info(`${reporter.name}: left open, overridden by ${reporter.overriddenBy ?? 'an operator'}`, meta);
    else if (reporter.ports.every(port => open.has(port)) && (reporter.isolate ?? []).every(port => voiceOpen.has(port)))
      logger.info(`${reporter.name}: left open without a deadline`, meta);
    else
      logger.warn(`${reporter.name}: left with the deadline the kernel holds (${reporter.deadlineAt == null ? 'unknown' : new Date(reporter.deadlineAt).toISOString()}): it could not be released`, meta);
  }
  return {clients: [...open], voice: [...voiceOpen]};
}
