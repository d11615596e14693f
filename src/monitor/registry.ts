import type {Arm, DesiredReporter, KernelPort, KernelView} from '../fencing';
import type {DeviceStats, Failing, Goodbye, Heartbeat, PathInfo, Rejoin, Unblock, UnwatchedVolume} from '../heartbeat';
import {FENCE_BUCKETS, HISTORY_MAX} from '../state';
import type {FenceDurations, HistoryEntry, ReporterSnapshot, ReporterState} from '../state';
import {AUTO, step} from './lifecycle';
import type {Life, LifeConfig, LifeEvent} from './lifecycle';

/** Injected so the registry and the apply loop can run on a fake clock in tests. */
export type Clock = {
  /** monotonic milliseconds */
  mono: () => number;
  /** epoch milliseconds */
  wall: () => number;
  setTimer: (fn: () => void, ms: number) => unknown;
  clearTimer: (handle: unknown) => void;
};

export const systemClock: Clock = {
  mono: () => performance.now(),
  wall: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: handle => clearTimeout(handle as NodeJS.Timeout),
};

export type Transition = {
  name: string;
  ports: ReadonlyArray<number>;
  state: ReporterState | 'forgotten';
  reason: string;
};

/**
 * `now`: the firewall must change (a fence, an unfence, new ports);
 * `rearm`: only deadlines moved (batched: the kernel still holds the old ones).
 */
export type Urgency = 'now' | 'rearm';

/** What the registry asks of the outside world; it never runs anything itself. */
export type RegistryEffects = {
  changed: (urgency: Urgency) => void;
  transition: (transition: Transition) => void;
  log: (level: 'error' | 'warn' | 'info' | 'debug', message: string, meta?: Record<string, unknown>) => void;
  /** A request was refused (rate-limit the log by key). */
  refuse: (key: string, message: string, meta?: Record<string, unknown>) => void;
};

export type RegistryOptions = LifeConfig & {
  protectPorts: ReadonlySet<number>;
  maxReporters: number;
};

export type ReporterRecord = {
  name: string;
  pid: number;
  ports: ReadonlyArray<number>;
  /** Destination ports its host must not reach while it is fenced. */
  isolate: ReadonlyArray<number>;
  /** Its rejoin condition, as its last heartbeat said (auto until one says otherwise). */
  rejoin: Rejoin;
  life: Life;
  /** Epoch ms; NaN until the first heartbeat. Numbers, never null: V8 then keeps them unboxed in the record. */
  lastHeartbeatAt: number;
  lastBeatMono: number;
  fenceCount: number;
  flapCount: number;
  heartbeats: number;
  lastProbeMs: number;
  interval: number;
  probeTimeout: number;
  /** The watched paths and the devices they were pinned to, as the reporter last said. */
  paths: ReadonlyArray<PathInfo> | null;
  /** Volumes its service writes to that it does not watch, as its last heartbeat said (empty: none). */
  unwatched: ReadonlyArray<UnwatchedVolume>;
  /** Its devices' counters from its last heartbeat or failing word, and when it sent them (epoch ms; NaN: never). */
  devices: ReadonlyArray<DeviceStats> | null;
  devicesAt: number;
  /** What it last said it fails on ('' since a newer heartbeat), and when (epoch ms). */
  said: string;
  saidAt: number;
  reason: string;
  /** When it entered its current state (epoch ms; NaN: unknown). */
  since: number;
  /** The last HISTORY_MAX transitions, oldest first. */
  history: Array<HistoryEntry>;
  fences: FenceDurations;
  timer: unknown;
  /** When the timer fires (monotonic ms). */
  timerAt: number;
  /**
   * The earliest moment (monotonic ms) the kernel may let this reporter's
   * deadline run out, as of the last acknowledged firewall write: Infinity
   * while the kernel holds none. The registry's own deadline can be later (a
   * heartbeat read but not yet written, or the monitor stopped before its
   * write): the kernel's wins.
   */
  heldUntil: number;
  warnedSlowProbe: boolean;
  /** Reused by desired(): what the firewall should hold for this reporter. */
  wish: DesiredReporter & {ports: ReadonlyArray<number>, arm: Arm};
  armed: {state: 'armed', until: number};
  /** A fenced reporter's voice, given back by its rejoin program until this deadline. */
  voiced: {state: 'armed', until: number};
};

const FENCED: Arm = Object.freeze({state: 'fenced'});
const OPEN: Arm = Object.freeze({state: 'open'});

export class Registry {
  readonly reporters = new Map<string, ReporterRecord>();
  /** The reporters' wishes in order; null when a reporter came or went. */
  private desiredList: Array<DesiredReporter> | null = null;
  heartbeatsAccepted = 0;
  heartbeatsStale = 0;

  constructor(private readonly options: RegistryOptions, private readonly effects: RegistryEffects, private readonly clock: Clock) {
  }

  /**
   * Start-up: reporters from the previous monitor's snapshot, reconciled with
   * what the kernel holds. A backend that holds deadlines kept counting while
   * no monitor ran: a port whose element expired was fenced by the kernel, a
   * port still armed keeps the time it has left (never more). Elements without
   * a deadline (a clean stop) and backends without deadlines give a fresh
   * --timeout to check in. Fenced reporters stay fenced.
   */
  adopt(previous: ReadonlyArray<ReporterSnapshot>, kernel: KernelView | null | 'unreadable', holdsDeadlines: boolean): void {
    const now = this.clock.mono();
    const wall = this.clock.wall();
    const unreadable = kernel === 'unreadable';
    const view = kernel === 'unreadable' ? null : kernel;
    for (const snapshot of [...previous, ...orphansOf(previous, view)]) {
      if (this.reporters.size >= this.options.maxReporters)
        break;
      let life: Life;
      let reason = snapshot.reason;
      let fenceCount = snapshot.fenceCount;
      if (snapshot.state === 'fenced') {
        // A voice given back stays as long as the kernel still holds it, never longer.
        const voiceLeft = snapshot.rejoin?.stage === 'voice' && holdsDeadlines && view !== null ? heldFrom(snapshot.isolate ?? [], view.isolated, now) : Infinity;
        life = {state: 'fenced', since: snapshot.fencedSince ?? wall, streak: 0, lastSentAt: null, voiceUntil: voiceLeft > now && voiceLeft < Infinity ? voiceLeft : null};
      } else if (snapshot.state === 'overridden') {
        life = {state: 'overridden', at: snapshot.overriddenAt ?? wall, by: snapshot.overriddenBy ?? 'unknown'};
      } else {
        let left: number | null = null;
        let expired = false;
        if (holdsDeadlines && view !== null) {
          for (const port of snapshot.ports) {
            const held = view.ports.get(port)?.alive;
            if (held === 'fenced')
              expired = true;
            else if (held !== undefined && held.leftMs !== null)
              left = left === null ? held.leftMs : Math.min(left, held.leftMs);
          }
        }
        if (expired || (holdsDeadlines && unreadable)) {
          life = {state: 'fenced', since: wall, streak: 0, lastSentAt: null, voiceUntil: null};
          reason = expired ? 'its deadline passed while no monitor was running: the kernel fenced it'
            : 'the kernel\'s deadlines could not be read at start-up: fenced until it heartbeats again, never opened unproven';
          fenceCount += 1;
        } else {
          life = {state: 'healthy', until: now + (left ?? this.options.timeoutMs)};
        }
      }
      const record: ReporterRecord = {
        name: snapshot.name,
        pid: snapshot.pid,
        ports: [...snapshot.ports],
        isolate: [...(snapshot.isolate ?? [])],
        rejoin: snapshot.rejoin === undefined || snapshot.rejoin.mode === 'auto' ? AUTO : {mode: snapshot.rejoin.mode},
        life,
        lastHeartbeatAt: snapshot.lastHeartbeatAt ?? NaN,
        lastBeatMono: snapshot.lastHeartbeatAt === null ? now : now - Math.max(0, wall - snapshot.lastHeartbeatAt),
        fenceCount,
        flapCount: snapshot.flapCount,
        heartbeats: snapshot.heartbeats,
        lastProbeMs: snapshot.lastProbeMs ?? NaN,
        interval: snapshot.interval ?? NaN,
        probeTimeout: snapshot.probeTimeout ?? NaN,
        paths: snapshot.paths ?? null,
        unwatched: snapshot.unwatched ?? [],
        devices: snapshot.devices ?? null,
        devicesAt: snapshot.devicesAt ?? NaN,
        said: snapshot.failure?.reason ?? '',
        saidAt: snapshot.failure?.at ?? NaN,
        reason,
        since: snapshot.stateSince ?? (snapshot.state === 'fenced' ? snapshot.fencedSince : snapshot.state === 'overridden' ? snapshot.overriddenAt : null) ?? NaN,
        history: (snapshot.history ?? []).slice(-HISTORY_MAX),
        fences: adoptFences(snapshot.fenceDurations),
        timer: null,
        timerAt: Infinity,
        heldUntil: life.state === 'healthy' && holdsDeadlines && view !== null ? heldFrom(snapshot.ports, view.ports, now) : Infinity,
        warnedSlowProbe: false,
        ...wishFor(snapshot.name),
      };
      this.reporters.set(record.name, record);
      this.desiredList = null;
      this.schedule(record);
      if (life.state === 'fenced' && snapshot.state !== 'fenced') {
        this.remember(record, snapshot.state, 'fenced', reason, wall);
        this.effects.log('error', `${record.name}: ${reason}`, {reporter: record.name, ports: record.ports.join(',')});
        this.effects.transition({name: record.name, ports: record.ports, state: 'fenced', reason});
      }
    }
    this.effects.changed('now');
  }

  heartbeat(message: Heartbeat): void {
    const protect = this.options.protectPorts;
    const refused = message.ports.some(port => protect.has(port)) ? message.ports.filter(port => protect.has(port)) : [];
    const ports = refused.length === 0 ? message.ports : message.ports.filter(port => !protect.has(port));
    if (refused.length > 0)
      this.effects.refuse(`protect:${message.name}`, `${message.name} asked to fence protected port(s) ${refused.join(',')}: refused (--protect-ports)`, {reporter: message.name});

    const now = this.clock.mono();
    const wall = this.clock.wall();
    // The deadline runs from when the reporter proved I/O, not from when the monitor read the line.
    const until = now - Math.max(0, wall - message.sentAt) + this.options.timeoutMs;
    let record = this.reporters.get(message.name);
    if (until <= now) {
      this.heartbeatsStale += 1;
      this.effects.refuse(`stale:${message.name}`, `heartbeat from ${message.name} is ${((wall - message.sentAt) / 1000).toFixed(1)} s old, older than --timeout (it waited in the FIFO): ignored`, {reporter: message.name});
      return;
    }

    if (record === undefined) {
      if (this.reporters.size >= this.options.maxReporters) {
        this.effects.refuse('max-reporters', `heartbeat from new reporter ${message.name} refused: already tracking ${this.reporters.size} reporters (--max-reporters)`);
        return;
      }
      record = {
        name: message.name,
        pid: message.pid,
        ports,
        isolate: message.isolate ?? [],
        rejoin: message.rejoin ?? AUTO,
        life: {state: 'healthy', until},
        lastHeartbeatAt: NaN,
        lastBeatMono: now,
        fenceCount: 0,
        flapCount: 0,
        heartbeats: 0,
        lastProbeMs: NaN,
        interval: message.interval,
        probeTimeout: message.probeTimeout,
        paths: null,
        unwatched: [],
        devices: null,
        devicesAt: NaN,
        said: '',
        saidAt: NaN,
        reason: 'first heartbeat',
        since: wall,
        history: [],
        fences: emptyFences(),
        timer: null,
        timerAt: Infinity,
        heldUntil: Infinity,
        warnedSlowProbe: false,
        ...wishFor(message.name),
      };
      this.reporters.set(record.name, record);
      this.desiredList = null;
      this.effects.log('info', `new reporter ${record.name}: ports ${ports.join(',') || '(none)'}`, {reporter: record.name, pid: message.pid});
      this.accept(record, message, ports, now, wall);
      this.schedule(record);
      this.effects.changed('now');
      return;
    }

    if (record.pid !== message.pid)
      this.effects.log('info', `reporter ${record.name} restarted (pid ${record.pid} → ${message.pid})`, {reporter: record.name});
    if (!record.warnedSlowProbe && message.probeTimeout * 1000 > this.options.timeoutMs / 3) {
      record.warnedSlowProbe = true;
      this.effects.log('warn', `${record.name}'s --probe-timeout (${message.probeTimeout} s) is more than a third of the monitor's --timeout (${this.options.timeoutMs / 1000} s): a slow probe can eat the fence window`, {reporter: record.name});
    }

    const before = record.life.state;
    this.settle(record);
    const portsChanged = !samePorts(record.ports, ports) || !samePorts(record.isolate, message.isolate ?? []);
    this.accept(record, message, ports, now, wall);
    const result = this.apply(record, {type: 'heartbeat', now, sentAt: message.sentAt, until, rejoin: record.rejoin});
    if (result === 'recovering')
      this.effects.log('debug', `${record.name} heartbeat ${(record.life as {streak: number}).streak}/${this.options.recover} towards recovery`, {reporter: record.name});
    else if (result === 'before-fence')
      this.effects.refuse(`before-fence:${record.name}`, `heartbeat from ${record.name} was sent before its fence began (it waited in the FIFO): it proves nothing since`, {reporter: record.name});
    this.effects.changed(result === 'changed' || portsChanged || record.life.state !== before ? 'now' : 'rearm');
  }

  /** The last heartbeat is when the reporter proved I/O (its sentAt), not when the monitor read it. */
  private accept(record: ReporterRecord, message: Heartbeat, ports: ReadonlyArray<number>, now: number, wall: number): void {
    const age = Math.max(0, wall - message.sentAt);
    record.pid = message.pid;
    if (!samePorts(record.ports, ports))
      record.ports = ports;
    const isolate = message.isolate ?? [];
    if (!samePorts(record.isolate, isolate))
      record.isolate = isolate;
    record.rejoin = message.rejoin ?? AUTO;
    record.lastBeatMono = now - age;
    record.lastHeartbeatAt = wall - age;
    record.lastProbeMs = message.probeMs;
    record.interval = message.interval;
    record.probeTimeout = message.probeTimeout;
    if (message.paths !== undefined && !samePaths(record.paths, message.paths))
      record.paths = message.paths;
    record.unwatched = message.unwatched ?? NONE_UNWATCHED;
    if (message.devices !== undefined) {
      record.devices = message.devices;
      record.devicesAt = message.sentAt;
    }
    // It proved I/O after what it said: the words no longer explain anything.
    if (record.said !== '' && !(record.saidAt > message.sentAt))
      record.said = '';
    record.heartbeats += 1;
    this.heartbeatsAccepted += 1;
  }

  /**
   * A reporter that cannot heartbeat says why. Kept for the fence's reason,
   * status and metrics; it moves no deadline and changes no state (anyone who
   * can write the FIFO could send one, and could as well send heartbeats). A
   * pid other than the last heartbeat's counts too: a reporter restarted on a
   * hung disk never heartbeats, and its words are the only ones there are.
   */
  failing(message: Failing): void {
    const record = this.reporters.get(message.name);
    if (record === undefined) {
      this.effects.log('debug', `failing word from unknown reporter ${message.name}: ${message.reason}`);
      return;
    }
    if (message.sentAt < record.lastHeartbeatAt)
      return;
    if (record.pid !== message.pid)
      this.effects.log('debug', `${record.name} (pid ${message.pid}, restarted: its last heartbeat came from pid ${record.pid}) says: ${message.reason}`, {reporter: record.name});
    if (record.said !== message.reason)
      this.effects.log('debug', `${record.name} says: ${message.reason}`, {reporter: record.name});
    record.said = message.reason;
    record.saidAt = message.sentAt;
    if (message.devices !== undefined) {
      record.devices = message.devices;
      record.devicesAt = message.sentAt;
    }
  }

  goodbye(message: Goodbye): void {
    const record = this.reporters.get(message.name);
    if (record === undefined) {
      this.effects.log('debug', `goodbye from unknown reporter ${message.name}`);
      return;
    }
    if (record.pid !== message.pid) {
      this.effects.refuse(`goodbye:${message.name}`, `goodbye for ${message.name} refused: pid ${message.pid} is not the reporter's (${record.pid})`, {reporter: message.name});
      return;
    }
    this.settle(record);
    if (record.life.state === 'fenced') {
      this.effects.refuse(`goodbye:${message.name}`, `goodbye for ${message.name} refused: it is fenced, and only unblock lifts a fence`, {reporter: message.name});
      return;
    }
    this.clock.clearTimer(record.timer);
    this.reporters.delete(record.name);
    this.desiredList = null;
    this.effects.log('info', `${record.name} said goodbye: forgotten`, {reporter: record.name});
    this.effects.transition({name: record.name, ports: record.ports, state: 'forgotten', reason: 'goodbye'});
    this.effects.changed('now');
  }

  /** Returns the names whose fence was lifted. */
  unblock(message: Unblock): Array<string> {
    const who = `${message.user} (pid ${message.pid})`;
    const targets = 'all' in message ? [...this.reporters.values()] : [this.reporters.get(message.name)].filter((r): r is ReporterRecord => r !== undefined);
    if (!('all' in message) && targets.length === 0)
      this.effects.log('warn', `unblock from ${who} for unknown reporter ${message.name}`);
    const lifted: Array<string> = [];
    for (const record of targets) {
      this.settle(record);
      if (this.apply(record, {type: 'unblock', wall: this.clock.wall(), by: who}) === 'changed')
        lifted.push(record.name);
      else
        this.effects.log('info', `unblock from ${who}: ${record.name} is ${record.life.state}, nothing to lift`, {reporter: record.name});
    }
    if (lifted.length > 0)
      this.effects.changed('now');
    return lifted;
  }

  /** Runs the transition function and carries out what it decided. */
  private apply(record: ReporterRecord, event: LifeEvent): 'changed' | 'recovering' | 'before-fence' | 'unchanged' {
    const from = record.life;
    const result = step(record.life, event, this.options);
    // Healthy stays healthy on nearly every heartbeat: move the deadline in place
    // rather than keep a new object a second (it would outlive a scavenge, and pile up).
    if (from.state === 'healthy' && result.life.state === 'healthy')
      from.until = result.life.until;
    else
      record.life = result.life;
    // Out of a fence or an override: what the kernel held before says nothing of the deadline to come.
    if (from.state !== 'healthy' && result.life.state === 'healthy')
      record.heldUntil = Infinity;
    this.schedule(record);
    if (result.change === null)
      return result.note === 'recovering' || result.note === 'before-fence' ? result.note : 'unchanged';
    const {to, reason} = result.change;
    const wall = this.clock.wall();
    const ports = record.ports.join(',') || '(none)';
    if (from.state === 'fenced' && to === 'fenced') {
      // Its voice given back or taken again: the fence itself (its reason, its start) stays.
      this.effects.log(record.life.state === 'fenced' && record.life.voiceUntil !== null ? 'warn' : 'error', `${record.name}: ${reason}`, {reporter: record.name, isolate: record.isolate.join(',')});
      this.remember(record, 'fenced', 'fenced', reason, wall, false);
      this.effects.transition({name: record.name, ports: record.ports, state: to, reason});
      return 'changed';
    }
    record.reason = reason;
    if (from.state === 'fenced')
      this.fenceEnded(record, Math.max(0, wall - from.since) / 1000);
    this.remember(record, from.state, to, reason, wall);
    switch (to) {
      case 'fenced':
        record.fenceCount += 1;
        this.effects.log('error', `${record.name}: ${reason}; fencing ports ${ports}${record.isolate.length === 0 ? '' : ` and isolating this host from port(s) ${record.isolate.join(',')}`}`, {reporter: record.name});
        break;
      case 'healthy':
        if (from.state === 'fenced') {
          record.flapCount += 1;
          this.effects.log('info', `${record.name} recovered after ${reason}: fence lifted`, {reporter: record.name, ports});
        } else {
          this.effects.log('info', `${record.name} is heartbeating again: healthy (override ended)`, {reporter: record.name});
        }
        break;
      case 'overridden':
        this.effects.log('warn', `${record.name}: fence lifted by ${(record.life as {by: string}).by}; overridden until its next heartbeat`, {reporter: record.name});
        break;
    }
    this.effects.transition({name: record.name, ports: record.ports, state: to, reason});
    return 'changed';
  }

  /** History: one entry per transition, the oldest dropped beyond HISTORY_MAX. */
  private remember(record: ReporterRecord, from: ReporterState, to: ReporterState, reason: string, wall: number, newState = true): void {
    record.history.push({at: wall, from, state: to, previousSeconds: Number.isNaN(record.since) ? null : Math.round(Math.max(0, wall - record.since)) / 1000, reason});
    if (record.history.length > HISTORY_MAX)
      record.history.splice(0, record.history.length - HISTORY_MAX);
    if (newState)
      record.since = wall;
  }

  private fenceEnded(record: ReporterRecord, seconds: number): void {
    const fences = record.fences;
    fences.count += 1;
    fences.sumSeconds = Math.round((fences.sumSeconds + seconds) * 1000) / 1000;
    fences.lastSeconds = Math.round(seconds * 1000) / 1000;
    const bucket = FENCE_BUCKETS.findIndex(bound => seconds <= bound);
    if (bucket !== -1)
      fences.buckets[bucket] = (fences.buckets[bucket] ?? 0) + 1;
  }

  /**
   * A deadline that has passed is a fence, even if its timer has not run yet
   * (the monitor was stopped), and whichever ran out first: the registry's, or
   * the one the kernel holds. It is a fence as of when it ran out.
   */
  private settle(record: ReporterRecord): void {
    const now = this.clock.mono();
    const due = dueOf(record);
    if (record.life.state === 'fenced' && now >= due) {
      this.apply(record, {type: 'deadline', now, wall: this.clock.wall() - (now - due), silentMs: due - record.lastBeatMono});
      return;
    }
    if (record.life.state === 'healthy' && now >= due) {
      // Words sent after the last heartbeat explain the silence; older ones do not.
      const said = record.said !== '' && !(record.saidAt < record.lastHeartbeatAt) ? record.said : undefined;
      this.apply(record, {type: 'deadline', now, wall: this.clock.wall() - (now - due), silentMs: due - record.lastBeatMono, held: record.heldUntil, ...(said === undefined ? {} : {said})});
    }
  }

  settleAll(): void {
    for (const record of this.reporters.values())
      this.settle(record);
  }

  /**
   * After an acknowledged write to a firewall that holds deadlines: what the
   * kernel now holds for each armed reporter. `earlyMs`: how much earlier than
   * its deadline the kernel may let an element run out (the write's lead, and
   * timeouts counted in jiffies).
   */
  acknowledged(earlyMs: number): void {
    for (const record of this.reporters.values()) {
      const arm = record.wish.arm;
      if (arm.state === 'armed') {
        record.heldUntil = arm.until - earlyMs;
        // The timer runs to the registry's deadline; the kernel's came earlier.
        if (record.heldUntil < record.timerAt)
          this.reschedule(record);
      } else if (arm.state === 'open') {
        record.heldUntil = Infinity;
      }
    }
  }

  /**
   * At a clean stop, before healthy reporters are left open with no deadline:
   * one that has missed its heartbeat and whose deadline is at most `marginMs`
   * past its interval away is as good as fenced (nothing would re-arm it
   * before its deadline), and is left fenced. A reporter merely between two
   * heartbeats is not (its deadline is then more than an interval away).
   */
  fenceDueAtStop(marginMs: number): void {
    const now = this.clock.mono();
    for (const record of this.reporters.values()) {
      if (record.life.state !== 'healthy')
        continue;
      const intervalMs = (Number.isNaN(record.interval) ? 1 : record.interval) * 1000;
      const due = dueOf(record);
      if (due - now <= intervalMs + marginMs && now - record.lastBeatMono > intervalMs + marginMs) {
        record.heldUntil = Math.min(record.heldUntil, now);
        this.settle(record);
      }
    }
  }

  /**
   * The kernel found these ports' deadlines run out (a stop released only the
   * ports it still held alive): their reporters are fenced, whatever the
   * registry believed.
   */
  expiredInKernel(ports: ReadonlyArray<number>, isolated: ReadonlyArray<number> = []): void {
    const gone = new Set(ports);
    const cut = new Set(isolated);
    const now = this.clock.mono();
    for (const record of this.reporters.values())
      if (record.life.state === 'healthy' && (record.ports.some(port => gone.has(port)) || record.isolate.some(port => cut.has(port)))) {
        record.heldUntil = Math.min(record.heldUntil, now);
        this.settle(record);
      }
  }

  /**
   * One timer per healthy reporter, set for its deadline. Heartbeats only move
   * the deadline; the timer, when it fires early, sets itself for the rest.
   */
  private schedule(record: ReporterRecord): void {
    if (dueOf(record) === Infinity) {
      this.clock.clearTimer(record.timer);
      record.timer = null;
      record.timerAt = Infinity;
      return;
    }
    if (record.timer !== null)
      return;
    record.timerAt = dueOf(record);
    record.timer = this.clock.setTimer(() => {
      record.timer = null;
      record.timerAt = Infinity;
      if (this.reporters.get(record.name) !== record)
        return;
      const before = record.life.state;
      this.settle(record);
      if (record.life.state !== before)
        this.effects.changed('now');
      else
        this.schedule(record);
    }, Math.max(0, record.timerAt - this.clock.mono()));
  }

  private reschedule(record: ReporterRecord): void {
    this.clock.clearTimer(record.timer);
    record.timer = null;
    this.schedule(record);
  }

  /**
   * What the firewall should hold now. Read on every flush (10 a second with
   * re-arms pending), so the list and its entries are reused, not rebuilt.
   */
  desired(): ReadonlyArray<DesiredReporter> {
    if (this.desiredList === null)
      this.desiredList = [...this.reporters.values()].map(record => record.wish);
    const now = this.clock.mono();
    for (const record of this.reporters.values()) {
      // A deadline that ran out while the monitor was stopped, its timer not yet run: never re-armed.
      if (now >= dueOf(record))
        this.settle(record);
      const wish = record.wish;
      wish.ports = record.ports;
      wish.isolate = record.isolate;
      const life = record.life;
      if (life.state === 'healthy') {
        record.armed.until = life.until;
        wish.arm = record.armed;
        wish.voice = record.armed;
      } else if (life.state === 'fenced') {
        wish.arm = FENCED;
        if (life.voiceUntil === null) {
          wish.voice = FENCED;
        } else {
          record.voiced.until = life.voiceUntil;
          wish.voice = record.voiced;
        }
      } else {
        wish.arm = OPEN;
        wish.voice = OPEN;
      }
    }
    return this.desiredList;
  }

  /**
   * At a clean stop: the ports to leave open with no deadline, those of
   * healthy reporters, but none that a fenced reporter guards too.
   */
  releasable(): {clients: Array<number>, voice: Array<number>} {
    const records = [...this.reporters.values()];
    const healthy = records.filter(r => r.life.state === 'healthy');
    const fenced = records.filter(r => r.life.state === 'fenced');
    const kept = new Set(fenced.flatMap(r => r.ports));
    const cut = new Set(fenced.filter(r => r.life.state === 'fenced' && r.life.voiceUntil === null).flatMap(r => r.isolate));
    const sorted = (ports: Iterable<number>) => [...new Set(ports)].sort((a, b) => a - b);
    return {
      clients: sorted(healthy.flatMap(r => r.ports)).filter(port => !kept.has(port)),
      voice: sorted(healthy.flatMap(r => r.isolate)).filter(port => !cut.has(port)),
    };
  }

  snapshot(): Array<ReporterSnapshot> {
    const now = this.clock.mono();
    const wall = this.clock.wall();
    return [...this.reporters.values()].map(r => ({
      name: r.name,
      pid: r.pid,
      ports: [...r.ports],
      state: r.life.state,
      lastHeartbeatAt: orNull(r.lastHeartbeatAt),
      fencedSince: r.life.state === 'fenced' ? r.life.since : null,
      overriddenAt: r.life.state === 'overridden' ? r.life.at : null,
      overriddenBy: r.life.state === 'overridden' ? r.life.by : null,
      deadlineAt: r.life.state === 'healthy' ? Math.round(wall + (r.life.until - now)) : null,
      fenceCount: r.fenceCount,
      flapCount: r.flapCount,
      heartbeats: r.heartbeats,
      lastProbeMs: orNull(r.lastProbeMs),
      interval: orNull(r.interval),
      probeTimeout: orNull(r.probeTimeout),
      ...(r.paths === null ? {} : {paths: r.paths.map(p => ({...p}))}),
      ...(r.unwatched.length === 0 ? {} : {unwatched: r.unwatched.map(u => ({...u}))}),
      reason: r.reason,
      stateSince: orNull(r.since),
      ...(r.history.length === 0 ? {} : {history: r.history}),
      ...(r.fences.count === 0 ? {} : {fenceDurations: r.fences}),
      ...(r.said === '' ? {} : {failure: {reason: r.said, at: r.saidAt}}),
      ...(r.devices === null ? {} : {devices: r.devices as Array<DeviceStats>, devicesAt: r.devicesAt}),
      ...(r.isolate.length === 0 ? {} : {isolate: [...r.isolate]}),
      ...(r.rejoin.mode === 'auto' && r.life.state !== 'fenced' ? {} : {rejoin: this.rejoinOf(r)}),
    }));
  }

  /** Where a reporter stands towards rejoining: for a fenced one, its voice and what it waits for. */
  private rejoinOf(record: ReporterRecord): NonNullable<ReporterSnapshot['rejoin']> {
    const life = record.life;
    if (life.state !== 'fenced')
      return {mode: record.rejoin.mode};
    const waiting = life.streak < this.options.recover ? 'disks' : record.rejoin.mode === 'manual' ? 'operator' : record.rejoin.mode === 'program' ? 'program' : 'disks';
    const reason = record.rejoin.mode === 'program' && record.rejoin.reason !== undefined && (record.rejoin.startedAt ?? 0) >= life.since ? record.rejoin.reason : undefined;
    return {mode: record.rejoin.mode, stage: life.voiceUntil === null ? 'fenced' : 'voice', waiting, ...(reason === undefined ? {} : {reason})};
  }

  close(): void {
    for (const record of this.reporters.values()) {
      this.clock.clearTimer(record.timer);
      record.timer = null;
      record.timerAt = Infinity;
    }
  }
}

const orNull = (n: number) => (Number.isNaN(n) ? null : n);

/**
 * When a deadline runs out: a healthy reporter's (the registry's own, or
 * earlier where the kernel holds an earlier one), or the voice a fenced
 * reporter's rejoin program gave back.
 */
function dueOf(record: ReporterRecord): number {
  const life = record.life;
  if (life.state === 'healthy')
    return Math.min(life.until, record.heldUntil);
  return life.state === 'fenced' && life.voiceUntil !== null ? life.voiceUntil : Infinity;
}

/** The deadline the kernel holds for these ports at start-up (the earliest), or Infinity when none has one. */
function heldFrom(ports: ReadonlyArray<number>, held: ReadonlyMap<number, KernelPort>, now: number): number {
  let earliest = Infinity;
  for (const port of ports) {
    const alive = held.get(port)?.alive;
    if (alive === 'fenced')
      return now;
    if (alive !== undefined && alive.leftMs !== null)
      earliest = Math.min(earliest, now + alive.leftMs);
  }
  return earliest;
}

const REPORTER_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Ports the kernel guards that no reporter of the snapshot accounts for (the
 * snapshot was lost or unreadable): each becomes a reporter of the name the
 * kernel records for it, in the state the kernel holds it, so a fenced port
 * stays fenced until its reporter proves its disk again or an operator
 * unblocks it. A port with no usable name becomes reporter `port-N`.
 */
function orphansOf(previous: ReadonlyArray<ReporterSnapshot>, kernel: KernelView | null): Array<ReporterSnapshot> {
  if (kernel === null)
    return [];
  const known = new Set(previous.flatMap(r => r.ports));
  const named = new Set(previous.map(r => r.name));
  const byName = new Map<string, Array<number>>();
  for (const [port, held] of kernel.ports) {
    if (known.has(port))
      continue;
    const owners = held.owners.filter(owner => REPORTER_NAME.test(owner) && !named.has(owner));
    for (const owner of owners.length > 0 ? owners : [`port-${port}`])
      byName.set(owner, [...(byName.get(owner) ?? []), port]);
  }
  return [...byName].map(([name, ports]) => {
    const fenced = ports.some(port => kernel.ports.get(port)?.alive === 'fenced');
    return {
      name, pid: 0, ports: ports.sort((a, b) => a - b), state: fenced ? 'fenced' : 'healthy',
      lastHeartbeatAt: null, fencedSince: null, overriddenAt: null, overriddenBy: null, deadlineAt: null,
      fenceCount: fenced ? 1 : 0, flapCount: 0, heartbeats: 0, lastProbeMs: null, interval: null, probeTimeout: null,
      reason: fenced ? 'found fenced in the kernel, with no record of it in the previous snapshot' : 'found in the kernel, with no record of it in the previous snapshot',
      stateSince: null,
    };
  });
}

function emptyFences(): FenceDurations {
  return {count: 0, sumSeconds: 0, lastSeconds: 0, buckets: FENCE_BUCKETS.map(() => 0)};
}

/** From a snapshot; buckets of another layout cannot be mapped onto these, so they start again (count and sum are kept). */
function adoptFences(previous: FenceDurations | undefined): FenceDurations {
  if (previous === undefined)
    return emptyFences();
  return {...previous, buckets: previous.buckets.length === FENCE_BUCKETS.length ? [...previous.buckets] : FENCE_BUCKETS.map(() => 0)};
}

function wishFor(name: string): {wish: ReporterRecord['wish'], armed: ReporterRecord['armed'], voiced: ReporterRecord['voiced']} {
  return {wish: {name, ports: [], arm: FENCED, isolate: [], voice: FENCED}, armed: {state: 'armed', until: 0}, voiced: {state: 'armed', until: 0}};
}

/** One empty list for every heartbeat without the field: nothing allocated per heartbeat. */
const NONE_UNWATCHED: ReadonlyArray<UnwatchedVolume> = Object.freeze([]);

function samePaths(a: ReadonlyArray<PathInfo> | null, b: ReadonlyArray<PathInfo>): boolean {
  return a !== null && a.length === b.length && a.every((p, i) => {
    const q = b[i]!;
    return p.path === q.path && p.device === q.device && p.source === q.source && p.fstype === q.fstype && p.mountPoint === q.mountPoint;
  });
}

function samePorts(a: ReadonlyArray<number>, b: ReadonlyArray<number>): boolean {
  return a.length === b.length && a.every((port, i) => port === b[i]);
}
