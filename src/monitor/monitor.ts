import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

import {StartupError} from '../errors';
import {IptablesFirewall, NftablesFirewall} from '../fencing';
import type {ApplyResult, Family, Firewall, Runner} from '../fencing';
import {LineDecoder} from '../heartbeat';
import type {Message} from '../heartbeat';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import type {FirewallChoice} from '../options';
import {mountOf, readMountTable} from '../mounts';
import {SpawnHelper} from '../spawn';
import {METRICS_FILE, SNAPSHOT_VERSION, copyAtomicAsync, emptyRejections, readSnapshot, renderMetricsTo, writeAtomicChunks, writeSnapshot} from '../state';
import type {Snapshot} from '../state';
import {ensureFifo, openFifoReader} from '../transport';
import {Applier} from './applier';
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

  let firewallOk = true;
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
      if (!wasOk)
        logger.info('firewall updated again after earlier failures');
      if (result.newlyFenced.length > 0)
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
      if (transition.state !== 'forgotten')
        transitions.push(transition);
    },
    log: (level, message, meta) => logger.log(level, message, meta ?? {}),
    refuse: (key, message, meta) => limited.log('warn', key, message, meta),
  }, systemClock);

  const applier = new Applier({
    firewall,
    desired: () => {
      inNextApply = transitions.length;
      return registry.desired();
    },
    clock: systemClock,
    reconcileMs: options.reconcileMs ?? RECONCILE_MS[firewall.name],
    onApplied,
  });
  firewall.onDrift(() => applier.checkSoon());

  const decoder = new LineDecoder({
    onMessage: message => handle(message),
    onReject: rejection => limited.log('warn', `reject:${rejection.reason}`, `dropped a FIFO line (${rejection.reason}): ${rejection.detail}`, {reason: rejection.reason}),
  });

  const handle = (message: Message) => {
    switch (message.kind) {
      case 'heartbeat':
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

  const kernel = await firewall.inspect();
  if (kernel === null)
    logger.error(`cannot read the ${firewall.name} firewall at start-up; will retry`);
  else if (kernel.ports.size > 0)
    logger.info(`found ${kernel.ports.size} ebsmon port(s) in the ${firewall.name} firewall`, {ports: [...kernel.ports.keys()].join(',')});
  if (previous !== null) {
    const known = new Set(previous.reporters.flatMap(r => r.ports));
    const orphans = [...(kernel?.ports.keys() ?? [])].filter(port => !known.has(port));
    if (orphans.length > 0)
      logger.warn(`removing ebsmon entries no reporter in the snapshot accounts for: ports ${orphans.join(',')}`);
  }
  registry.adopt(previous?.reporters ?? [], kernel, firewall.holdsDeadlines);
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
  registry.settleAll();
  registry.close();
  // Stopping the monitor fences nothing: healthy reporters' ports stay open, without a deadline, until the next monitor re-arms them.
  const final = await Promise.race([applier.stop(registry.desired(true)), new Promise<null>(resolve => setTimeout(() => resolve(null), STOP_APPLY_WAIT_MS).unref())]);
  if (final === null || !final.ok)
    logger.error(`could not write the stopping state to the firewall${final === null ? '' : `: ${final.detail}`}; deadlines run on`);
  await firewall.close();
  helper.close();
  writeState();
  const fenced = registry.snapshot().filter(r => r.state === 'fenced').map(r => r.name);
  logger.info(fenced.length === 0 ? 'monitor stopped' : 'monitor stopped; fences stay in place for the next monitor', {fenced: fenced.join(',') || '(none)'});
}
