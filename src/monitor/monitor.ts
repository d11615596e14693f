import fs from 'node:fs';
import path from 'node:path';

import {LineDecoder} from '../heartbeat';
import type {Message} from '../heartbeat';
import {Fencer, isFailure} from '../fencing';
import type {Family} from '../fencing';
import {RateLimitedLog} from '../log';
import type {Logger} from '../log';
import {start} from '../spawn';
import {METRICS_FILE, SNAPSHOT_VERSION, emptyRejections, readSnapshot, renderMetrics, writeAtomic, writeSnapshot} from '../state';
import type {Snapshot} from '../state';
import {ensureFifo, openFifoReader} from '../transport';
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
  /** Tests run one family where the kernel lacks the other. */
  families?: ReadonlyArray<Family>;
  reconcileMs?: number;
};

export type MonitorDeps = {
  logger: Logger;
  /** Called once the FIFO is open and the firewall is in its start-up state. */
  onReady?: () => void;
};

const HOOK_DEADLINE_MS = 10_000;
const SNAPSHOT_EVERY_MS = 1_000;

export async function runMonitor(deps: MonitorDeps, options: MonitorOptions, signal: AbortSignal): Promise<void> {
  const {logger} = deps;
  fs.mkdirSync(options.stateDir, {recursive: true, mode: 0o755});
  ensureFifo(options.fifo);

  let previous: Snapshot | null = null;
  try {
    previous = readSnapshot(options.stateDir);
  } catch (error) {
    logger.warn(`ignoring the previous snapshot: ${(error as Error).message}`);
  }

  const startedAt = Date.now();
  const limited = new RateLimitedLog(logger, 10_000);
  let firewallOk = true;
  const fencer = new Fencer(logger, {
    families: options.families,
    reconcileMs: options.reconcileMs,
    onApplied: ok => {
      if (ok !== firewallOk) {
        firewallOk = ok;
        scheduleSnapshot();
      }
    },
  });

  const runHook = (transition: Transition) => {
    if (options.onChange === undefined)
      return;
    const env = {
      ...process.env,
      EBSMON_REPORTER: transition.name,
      EBSMON_PORTS: transition.ports.join(','),
      EBSMON_STATE: transition.state,
      EBSMON_REASON: transition.reason,
    };
    let running;
    try {
      running = start([options.onChange], {env, timeoutMs: HOOK_DEADLINE_MS, maxOutputBytes: 64 * 1024});
    } catch (error) {
      logger.error(`--on-change ${options.onChange} could not start: ${(error as Error).message}`);
      return;
    }
    void running.result.then(result => {
      if (result.spawnError !== undefined)
        logger.error(`--on-change ${options.onChange} could not start: ${result.spawnError}`);
      else if (result.timedOut)
        logger.error(`--on-change ${options.onChange} was killed after ${HOOK_DEADLINE_MS / 1000} s`, {reporter: transition.name});
      else if (result.code !== 0)
        logger.error(`--on-change ${options.onChange} failed (exit ${result.code ?? result.signal})`, {reporter: transition.name, stderr: result.stderr.trim().slice(0, 500)});
    });
  };

  const registry = new Registry({
    timeoutMs: options.timeout * 1000,
    recover: options.recover,
    protectPorts: new Set(options.protectPorts),
    maxReporters: options.maxReporters,
  }, {
    fence: (name, ports) => {
      void fencer.set(name, ports);
    },
    unfence: name => {
      void fencer.remove(name);
    },
    transition: transition => {
      scheduleSnapshot();
      if (transition.state === 'forgotten' || transition.reason === 'first heartbeat')
        return;
      // The fence goes in first; the hook waits for that apply, and never delays it.
      void fencer.settled().then(() => runHook(transition));
    },
    log: (level, message, meta) => logger.log(level, message, meta ?? {}),
    refuse: (key, message, meta) => limited.log('warn', key, message, meta),
  }, systemClock);

  const decoder = new LineDecoder({
    onMessage: message => handle(message),
    onReject: rejection => limited.log('warn', `reject:${rejection.reason}`, `dropped a FIFO line (${rejection.reason}): ${rejection.detail}`, {reason: rejection.reason}),
  });

  const handle = (message: Message) => {
    switch (message.kind) {
      case 'heartbeat':
        registry.heartbeat(message);
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
    },
    reporters: registry.snapshot(),
  });

  const writeState = () => {
    const snapshot = buildSnapshot();
    try {
      writeSnapshot(options.stateDir, snapshot);
      const metrics = renderMetrics(snapshot, snapshot.monitor.writtenAt);
      writeAtomic(path.join(options.stateDir, METRICS_FILE), metrics);
      if (options.metricsFile !== undefined)
        writeAtomic(options.metricsFile, metrics);
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

  const kernel = await fencer.inspect();
  for (const [family, state] of kernel) {
    if (isFailure(state))
      logger.error(`cannot read the ${family} firewall at start-up (${state.what}): ${state.detail}; will retry`);
    else if (state.fences.length > 0)
      logger.info(`found ${state.fences.length} ebsmon rule(s) in the ${family} firewall`, {family, names: [...new Set(state.fences.map(f => f.name))].join(',')});
  }
  if (previous !== null) {
    registry.adopt(previous.reporters);
    const fenced = previous.reporters.filter(r => r.state === 'fenced').map(r => r.name);
    logger.info(`adopted ${previous.reporters.length} reporter(s) from the previous snapshot; each has ${options.timeout} s to check in`, {fenced: fenced.join(',') || '(none)'});
  }
  // Rules nobody accounts for are removed by this first whole-chain rewrite.
  await fencer.sync();
  fencer.startReconciling();

  const reader = openFifoReader(options.fifo, chunk => decoder.push(chunk));
  const pulse = setInterval(writeState, SNAPSHOT_EVERY_MS);
  writeState();
  logger.info('monitor running', {fifo: options.fifo, stateDir: options.stateDir, timeout: options.timeout, recover: options.recover, protectPorts: options.protectPorts.join(',')});
  deps.onReady?.();

  await new Promise<void>(resolve => {
    if (signal.aborted)
      resolve();
    else
      signal.addEventListener('abort', () => resolve(), {once: true});
  });

  reader.close();
  clearInterval(pulse);
  registry.close();
  await fencer.close();
  writeState();
  const fenced = registry.snapshot().filter(r => r.state === 'fenced').map(r => r.name);
  logger.info(fenced.length === 0 ? 'monitor stopped' : 'monitor stopped; fences stay in place for the next monitor', {fenced: fenced.join(',') || '(none)'});
}
