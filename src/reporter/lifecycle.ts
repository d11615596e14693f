import type {RejoinAnswer} from '../heartbeat';
import {probeFile} from '../probe';
import type {CheckOutcome, ProbeMethod, ProbeOutcome} from '../probe';
import {composeReason, describeCheck, describeFileEvent, describeProbe} from './findings';
import type {Finding} from './findings';

/**
 * The reporter's decisions: states and events as types, one transition
 * function, no side effects (runReporter carries out the effects it returns).
 *
 * Watched paths and checks are keyed collections that events add to and take
 * from, so a path found at run time (or dropped) is one more event, not a new
 * loop. Each path has one resident prober:
 *
 *   none --tick--> probing --answer--> idle --tick--> probing ...
 *   probing --deadline--> abandoned --exited--> none (a new one at the next tick)
 *
 * so at most one prober per path exists at any time, and one stuck in the
 * kernel is never asked again nor stacked on. A heartbeat needs every path
 * and every check to have passed with a run started after the previous
 * heartbeat; anything failing makes a `failing` word (at most once a tick, at
 * once when what is wrong changes) and no heartbeat.
 *
 * Times (`now`, `since`) are monotonic milliseconds.
 */

export type LifeConfig = {
  /** the reporter's name: log fields and the probe file's name */
  name: string;
  /** how often "still failing" is said at warn level */
  reminderMs: number;
  /**
   * When a fence may lift once the disks are proven again (the monitor
   * decides; this says which rule): `auto` after its recovery heartbeats,
   * `manual` by an operator's unblock, `program` when the rejoin program
   * says so, in stages (voice first, then clients).
   */
  rejoin: 'auto' | 'manual' | 'program';
};

/**
 * The rejoin program's side: it runs only while the monitor says this
 * reporter is fenced and its disks pass, one run at a time; its latest answer
 * rides on every heartbeat. Times are epoch milliseconds (the monitor's
 * clock: it counts only runs started after its fence began).
 */
export type RejoinState = {
  /** when the monitor's fence began, from its word on tmpfs; null when not fenced */
  fencedSince: number | null;
  running: boolean;
  /** its process still exists (killed at its deadline, stuck in the kernel) */
  alive: boolean;
  latest: {answer: RejoinAnswer, startedAt: number, reason: string} | null;
};

/** A path's mount no longer what was pinned, or the table unreadable: the path fails without being probed. */
export type MountProblem = {code: 'EMOUNTGONE' | 'EMOUNTREPLACED' | 'EMOUNTTABLE', reason: string};

export type ProberState =
  /** no process: one is started at the next tick */
  | {state: 'none'}
  /** resident, waiting for a request */
  | {state: 'idle', id: number}
  | {state: 'probing', id: number, since: number}
  /** missed its deadline: killed, never asked again, replaced once it has exited */
  | {state: 'abandoned', id: number};

export type PathResult =
  | {ok: true, ms: number}
  | {ok: false, code: string, finding: Finding};

export type WatchedPath = {
  /** as given (--monitor, or found by discovery) */
  path: string;
  /** absolute, symlinks resolved: where the probe file is */
  dir: string;
  prober: ProberState;
  /** O_DIRECT or not, decided by the path's first answer */
  method: ProbeMethod | 'untried';
  /** the latest answer or mount check; null before the first */
  latest: PathResult | null;
  /** when the latest passing probe started */
  provenAt: number;
  /** requests sent so far (the sequence number written into the block) */
  probes: number;
};

export type CheckResult =
  | {ok: true, ms: number}
  | {ok: false, code: string, finding: Finding};

export type CheckedProgram = {
  text: string;
  /** started, no result yet */
  running: boolean;
  /** its process still exists (a run killed at its deadline may linger in the kernel) */
  alive: boolean;
  since: number;
  latest: CheckResult | null;
  provenAt: number;
  runs: number;
};

export type Health =
  | {state: 'starting'}
  | {state: 'healthy'}
  /** key: what is wrong (not its numbers); since: the first failing evaluation of this episode */
  | {state: 'failing', key: string, reason: string, code: string, since: number, remindedAt: number, suppressed: number};

export type Life = {
  config: LifeConfig;
  paths: ReadonlyMap<string, WatchedPath>;
  checks: ReadonlyMap<string, CheckedProgram>;
  health: Health;
  /** the last heartbeat's sequence number */
  seq: number;
  /** when the last heartbeat was decided: the next needs proofs started after it */
  lastBeatAt: number;
  ticks: number;
  /** the last failing word sent: at most one a tick with the same key */
  said: {tick: number, key: string} | null;
  nextProber: number;
  rejoin: RejoinState;
  /** set by stop: no heartbeat or failing word any more, a goodbye decided once nothing is in flight */
  stopping: boolean;
  done: boolean;
};

export type LifeEvent =
  | {type: 'watch', path: string, dir: string}
  | {type: 'unwatch', path: string}
  | {type: 'add-check', text: string}
  | {type: 'remove-check', text: string}
  /**
   * Every interval. `mounts`: each path's mount problem, from one read of the
   * mount table, when needsMountTable() asked for it; `restated`: a path whose
   * abandoned prober is still stuck, its timeout in words again with this
   * tick's device counters; `pids`: for the log, the processes still busy (by
   * path, or by check text).
   */
  | {type: 'tick', mounts?: ReadonlyMap<string, MountProblem>, restated?: ReadonlyMap<string, Finding>, pids?: ReadonlyMap<string, number>, fencedSince?: number | null}
  /**
   * `mount`: the path's mount problem, from the table read again because the
   * answer failed or said the table changed; `finding`: a failing answer in
   * words, with its device's evidence.
   */
  | {type: 'probe-result', path: string, prober: number, outcome: ProbeOutcome, mount?: MountProblem, finding?: Finding}
  | {type: 'prober-exited', path: string, prober: number, code: number | null}
  | {type: 'check-result', text: string, outcome: CheckOutcome}
  | {type: 'check-exited', text: string}
  /** `startedAt`: epoch ms when the run that answered started */
  | {type: 'rejoin-result', answer: RejoinAnswer, reason: string, startedAt: number}
  | {type: 'rejoin-exited'}
  | {type: 'stop'}
  /** The wait for answers in flight is over. */
  | {type: 'stop-timeout'};

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export type Effect =
  | {type: 'start-prober', path: string, prober: number}
  | {type: 'probe', path: string, prober: number, seq: number, method: ProbeMethod}
  | {type: 'abandon-prober', path: string, prober: number}
  /** a path no longer watched: its prober goes */
  | {type: 'close-prober', path: string, prober: number}
  | {type: 'run-check', text: string}
  /** `fencedSince`: for the program's environment */
  | {type: 'run-rejoin', fencedSince: number}
  /** `rejoin`: the program's latest answer, while fenced */
  | {type: 'heartbeat', seq: number, probeMs: number, rejoin?: {answer: RejoinAnswer, startedAt: number, reason: string}}
  | {type: 'failing', reason: string}
  | {type: 'log', level: LogLevel, message: string, fields: Record<string, unknown>}
  /** Stopped: say goodbye (the monitor forgets this reporter) only when healthy with nothing stuck. */
  | {type: 'finish', goodbye: boolean, reason: string};

export type Step = {life: Life, effects: Array<Effect>};

/**
 * Whether this tick must read the mount table itself. A prober asks the
 * kernel before and after each probe whether the table changed and says so
 * (the table is then read with its answer); the reporter reads it at a tick
 * only where no such answer can come: a prober that is new (it saw nothing
 * before it started) or stuck, and a path whose mount was found wrong (to see
 * it come back; it is not probed meanwhile).
 */
export function needsMountTable(life: Life): boolean {
  for (const watched of life.paths.values()) {
    if (watched.prober.state !== 'idle' || MOUNT_PROBLEMS.has(watched.latest?.ok === false ? watched.latest.code : ''))
      return true;
  }
  return false;
}

export function initialLife(config: LifeConfig): Life {
  return {config, paths: new Map(), checks: new Map(), health: {state: 'starting'}, seq: 0, lastBeatAt: -Infinity, ticks: 0, said: null, nextProber: 1,
    rejoin: {fencedSince: null, running: false, alive: false, latest: null}, stopping: false, done: false};
}

/** A probe that missed its deadline: its prober is abandoned. ESPAWN: it never ran, so nothing is left to ask. */
const PROBER_LOST = new Set(['ETIMEDOUT', 'ENOSTART', 'ESPAWN']);
const TIMEOUTS = new Set(['ETIMEDOUT', 'ENOSTART']);
const MOUNT_PROBLEMS = new Set(['EMOUNTGONE', 'EMOUNTREPLACED', 'EMOUNTTABLE']);

const round = (n: number) => Math.round(n * 100) / 100;

/** Mutable drafts of one step: copies, never the caller's objects. */
class Draft {
  readonly paths: Map<string, WatchedPath>;
  readonly checks: Map<string, CheckedProgram>;
  readonly effects: Array<Effect> = [];
  life: Life;

  constructor(life: Life, readonly now: number) {
    this.life = {...life};
    this.paths = new Map(life.paths);
    this.checks = new Map(life.checks);
  }

  log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
    this.effects.push({type: 'log', level, message, fields});
  }

  setPath(path: WatchedPath): void {
    this.paths.set(path.path, path);
  }

  setCheck(check: CheckedProgram): void {
    this.checks.set(check.text, check);
  }

  done(): Step {
    return {life: {...this.life, paths: this.paths, checks: this.checks}, effects: this.effects};
  }
}

export function step(life: Life, event: LifeEvent, now: number): Step {
  if (life.done)
    return {life, effects: []};
  const d = new Draft(life, now);
  switch (event.type) {
    case 'watch':
      if (!d.paths.has(event.path))
        d.setPath({path: event.path, dir: event.dir, prober: {state: 'none'}, method: 'untried', latest: null, provenAt: -Infinity, probes: 0});
      break;
    case 'unwatch': {
      const watched = d.paths.get(event.path);
      if (watched === undefined)
        break;
      d.paths.delete(event.path);
      if (watched.prober.state === 'idle' || watched.prober.state === 'probing')
        d.effects.push({type: 'close-prober', path: event.path, prober: watched.prober.id});
      evaluate(d);
      break;
    }
    case 'add-check':
      if (!d.checks.has(event.text))
        d.setCheck({text: event.text, running: false, alive: false, since: 0, latest: null, provenAt: -Infinity, runs: 0});
      break;
    case 'remove-check':
      if (d.checks.delete(event.text))
        evaluate(d);
      break;
    case 'tick':
      if (!d.life.stopping)
        tick(d, event);
      break;
    case 'probe-result':
      probeResult(d, event);
      break;
    case 'prober-exited': {
      const watched = d.paths.get(event.path);
      if (watched === undefined || watched.prober.state === 'none' || watched.prober.id !== event.prober)
        break;
      if (watched.prober.state !== 'abandoned' && !d.life.stopping)
        d.log('warn', `the prober of ${watched.path} exited (${event.code ?? 'its spawn helper is gone'}); a new one starts at the next tick`, {path: watched.path});
      d.setPath({...watched, prober: {state: 'none'}});
      break;
    }
    case 'check-result':
      checkResult(d, event);
      break;
    case 'check-exited': {
      const check = d.checks.get(event.text);
      if (check !== undefined)
        d.setCheck({...check, alive: false});
      break;
    }
    case 'rejoin-result':
      rejoinResult(d, event);
      break;
    case 'rejoin-exited':
      d.life.rejoin = {...d.life.rejoin, alive: false};
      break;
    case 'stop':
      d.life.stopping = true;
      break;
    case 'stop-timeout':
      finish(d);
      break;
  }
  if (d.life.stopping && !d.life.done && !inFlight(d))
    finish(d);
  return d.done();
}

function tick(d: Draft, event: Extract<LifeEvent, {type: 'tick'}>): void {
  d.life.ticks += 1;
  // Something stuck and failing: its reason (the device's evidence) is said again with this tick's counters.
  let reconsider = false;
  for (const watched of d.paths.values()) {
    const mount = event.mounts?.get(watched.path);
    if (mount !== undefined) {
      d.setPath({...watched, latest: mountFailure(watched.path, mount)});
      reconsider = true;
      continue;
    }
    const prober = watched.prober;
    if (prober.state === 'probing' || prober.state === 'abandoned') {
      d.log('debug', 'previous probe process still exists (stuck in the kernel?); not starting another', {path: watched.path, pid: event.pids?.get(watched.path)});
      const restated = event.restated?.get(watched.path);
      if (restated !== undefined && prober.state === 'abandoned' && watched.latest?.ok === false && TIMEOUTS.has(watched.latest.code))
        d.setPath({...watched, latest: {...watched.latest, finding: restated}});
      reconsider ||= watched.latest?.ok === false;
      continue;
    }
    let id: number;
    if (prober.state === 'none') {
      id = d.life.nextProber++;
      d.effects.push({type: 'start-prober', path: watched.path, prober: id});
    } else {
      id = prober.id;
    }
    d.effects.push({type: 'probe', path: watched.path, prober: id, seq: watched.probes, method: watched.method === 'dsync' ? 'dsync' : 'direct'});
    d.setPath({...watched, prober: {state: 'probing', id, since: d.now}, probes: watched.probes + 1});
  }
  for (const check of d.checks.values()) {
    if (check.running || check.alive) {
      d.log('debug', 'previous check still running; not starting another', {check: check.text, pid: event.pids?.get(check.text)});
      reconsider ||= check.latest?.ok === false;
      continue;
    }
    d.effects.push({type: 'run-check', text: check.text});
    d.setCheck({...check, running: true, alive: true, since: d.now, runs: check.runs + 1});
  }
  if (reconsider)
    evaluate(d);
  if (d.life.config.rejoin === 'program' && event.fencedSince !== undefined)
    rejoinTick(d, event.fencedSince);
}

/**
 * The rejoin program runs while the monitor says this reporter is fenced and
 * its disks passed (the last evaluation was healthy): a node whose disk still
 * hangs has nothing to ask. Lifted (no word on tmpfs): its answer is
 * forgotten, so a later fence starts from "not yet".
 */
function rejoinTick(d: Draft, fencedSince: number | null): void {
  const rejoin = d.life.rejoin;
  if (fencedSince === null) {
    if (rejoin.fencedSince !== null)
      d.log('info', 'the monitor lifted the fence: the rejoin program rests', {name: d.life.config.name});
    d.life.rejoin = {...rejoin, fencedSince: null, latest: null};
    return;
  }
  if (rejoin.fencedSince !== fencedSince) {
    d.log('info', 'fenced by the monitor: the rejoin program runs each interval once the disks pass', {name: d.life.config.name, fencedSince: new Date(fencedSince).toISOString()});
    d.life.rejoin = {...rejoin, fencedSince, latest: rejoin.latest !== null && rejoin.latest.startedAt >= fencedSince ? rejoin.latest : null};
  }
  if (d.life.health.state !== 'healthy' || d.life.rejoin.running || d.life.rejoin.alive)
    return;
  d.effects.push({type: 'run-rejoin', fencedSince});
  d.life.rejoin = {...d.life.rejoin, running: true, alive: true};
}

function rejoinResult(d: Draft, event: Extract<LifeEvent, {type: 'rejoin-result'}>): void {
  const rejoin = d.life.rejoin;
  if (!rejoin.running)
    return;
  const previous = rejoin.latest?.answer ?? 'none';
  if (event.answer !== previous)
    d.log(event.answer === 'none' ? 'info' : 'warn', `rejoin program: ${event.answer === 'clients' ? 'clients may come back' : event.answer === 'voice' ? 'the coordinator may be reached again, clients not yet' : 'not yet'}: ${event.reason}`, {name: d.life.config.name, answer: event.answer});
  // An answer from before the current fence began says nothing about it.
  const counts = rejoin.fencedSince !== null && event.startedAt >= rejoin.fencedSince;
  d.life.rejoin = {...rejoin, running: false, latest: counts ? {answer: event.answer, startedAt: event.startedAt, reason: event.reason} : rejoin.latest};
}

function mountFailure(path: string, mount: MountProblem): PathResult {
  return {ok: false, code: mount.code, finding: describeProbe(path, {ok: false, ...mount, ms: 0}, null)};
}

function probeResult(d: Draft, event: Extract<LifeEvent, {type: 'probe-result'}>): void {
  const watched = d.paths.get(event.path);
  if (watched === undefined || watched.prober.state !== 'probing' || watched.prober.id !== event.prober)
    return;
  const {outcome} = event;
  const file = probeFile(watched.dir, d.life.config.name);
  for (const fileEvent of outcome.events ?? []) {
    const {level, message} = describeFileEvent(file, fileEvent);
    d.log(level, message, {path: watched.path, event: fileEvent.kind});
  }
  let method = watched.method;
  if (method === 'untried') {
    // O_DIRECT is refused with EINVAL by tmpfs (before 6.6) and some network filesystems (open(2)): O_DSYNC writes there.
    const refused = !outcome.ok && outcome.code === 'EINVAL';
    method = refused ? 'dsync' : 'direct';
    const detail = outcome.ok ? 'O_DIRECT|O_DSYNC write, O_DIRECT read-back' : refused ? 'O_DIRECT refused (EINVAL): O_DSYNC write, read-back' : `undecided, first probe failed (${outcome.reason}): assuming O_DIRECT`;
    d.log('info', `probe method: ${detail}`, {path: watched.path, method, file});
  }
  const lost = !outcome.ok && PROBER_LOST.has(outcome.code);
  if (lost)
    d.effects.push({type: 'abandon-prober', path: watched.path, prober: watched.prober.id});
  const prober: ProberState = lost ? {state: 'abandoned', id: watched.prober.id} : {state: 'idle', id: watched.prober.id};
  // The mount may have gone before or while the probe ran: then it proved (or failed on) the wrong disk, or a detached one.
  if (event.mount !== undefined) {
    d.setPath({...watched, prober, method, latest: mountFailure(watched.path, event.mount)});
  } else if (outcome.ok) {
    d.log('debug', 'probe passed', {path: watched.path, probe: watched.probes, probeMs: round(outcome.ms)});
    d.setPath({...watched, prober, method, latest: {ok: true, ms: outcome.ms}, provenAt: watched.prober.since});
  } else {
    d.setPath({...watched, prober, method, latest: {ok: false, code: outcome.code, finding: event.finding ?? describeProbe(watched.path, outcome, null)}});
  }
  evaluate(d);
}

function checkResult(d: Draft, event: Extract<LifeEvent, {type: 'check-result'}>): void {
  const check = d.checks.get(event.text);
  if (check === undefined || !check.running)
    return;
  const {outcome} = event;
  if (outcome.ok) {
    d.log('debug', 'check passed', {check: check.text, run: check.runs, checkMs: round(outcome.ms)});
    d.setCheck({...check, running: false, latest: {ok: true, ms: outcome.ms}, provenAt: check.since});
  } else {
    d.setCheck({...check, running: false, latest: {ok: false, code: outcome.code, finding: describeCheck(check.text, outcome)}});
  }
  evaluate(d);
}

/**
 * Healthy only when every path's latest probe and every check passed; a
 * heartbeat only when each has passed with a run started after the last
 * heartbeat, so one still in flight holds the heartbeat back, and one round
 * gives one heartbeat.
 */
function evaluate(d: Draft): void {
  const failed: Array<{finding: Finding, code: string}> = [];
  for (const unit of [...d.paths.values(), ...d.checks.values()]) {
    if (unit.latest !== null && !unit.latest.ok)
      failed.push(unit.latest);
  }
  if (failed.length > 0) {
    if (d.life.stopping)
      return;
    const key = failed.map(f => f.finding.key).join('\n');
    const reason = composeReason(failed.map(f => f.finding));
    becomeFailing(d, key, reason, failed[0]!.code);
    if (d.life.said?.tick !== d.life.ticks || d.life.said.key !== key) {
      d.life.said = {tick: d.life.ticks, key};
      d.effects.push({type: 'failing', reason});
    }
    return;
  }
  const units = [...d.paths.values(), ...d.checks.values()];
  if (d.paths.size === 0 || units.some(u => u.latest === null || u.provenAt <= d.life.lastBeatAt))
    return;
  d.life.lastBeatAt = d.now;
  const ms = Math.max(...[...d.paths.values()].map(w => (w.latest?.ok === true ? w.latest.ms : 0)));
  becomeHealthy(d, ms);
  if (!d.life.stopping) {
    d.life.seq += 1;
    const latest = d.life.rejoin.fencedSince === null ? null : d.life.rejoin.latest;
    d.effects.push({type: 'heartbeat', seq: d.life.seq, probeMs: round(ms), ...(latest === null ? {} : {rejoin: latest})});
  }
}

function becomeHealthy(d: Draft, probeMs: number): void {
  const {health} = d.life;
  const name = d.life.config.name;
  if (health.state === 'failing')
    d.log('info', 'healthy again: heartbeats resume', {name, probeMs: round(probeMs), failedForSeconds: round((d.now - health.since) / 1000)});
  else if (health.state === 'starting')
    d.log('info', 'healthy: sending heartbeats', {name, probeMs: round(probeMs)});
  d.life.health = {state: 'healthy'};
}

/** Said once per change of what is wrong (error); the same again at debug level, and as a warning at most once per reminderMs. */
function becomeFailing(d: Draft, key: string, reason: string, code: string): void {
  const {health, config: {name, reminderMs}} = d.life;
  if (health.state !== 'failing' || health.key !== key) {
    d.log('error', `failing: ${reason}; no heartbeat until it passes`, {name, code});
    d.life.health = {state: 'failing', key, reason, code, since: health.state === 'failing' ? health.since : d.now, remindedAt: d.now, suppressed: 0};
    return;
  }
  d.log('debug', `still failing: ${reason}`, {name});
  if (d.now - health.remindedAt < reminderMs) {
    d.life.health = {...health, reason, suppressed: health.suppressed + 1};
    return;
  }
  d.log('warn', `still failing: ${reason}`, {name, failingForSeconds: round((d.now - health.since) / 1000), ...(health.suppressed > 0 ? {suppressed: health.suppressed} : {})});
  d.life.health = {...health, reason, remindedAt: d.now, suppressed: 0};
}

/** Answers still awaited: a request within its deadline, a check without a result. */
function inFlight(d: Draft): boolean {
  return [...d.paths.values()].some(w => w.prober.state === 'probing') || [...d.checks.values()].some(c => c.running);
}

function finish(d: Draft): void {
  if (d.life.done)
    return;
  const {health} = d.life;
  const proven = [...d.paths.values()].every(w => (w.prober.state === 'idle' || w.prober.state === 'none') && w.latest?.ok === true)
    && [...d.checks.values()].every(c => !c.running && !c.alive && c.latest?.ok === true);
  d.life.stopping = true;
  d.life.done = true;
  d.effects.push({type: 'finish', goodbye: health.state === 'healthy' && proven, reason: health.state === 'failing' ? health.reason : ''});
}
