import type {Goodbye, Heartbeat, Unblock} from '../heartbeat';
import type {ReporterSnapshot, ReporterState} from '../state';

/** Injected so the state machine can run on a fake clock in tests. */
export type Clock = {
  /** monotonic milliseconds */
  mono: () => number;
  /** epoch milliseconds */
  wall: () => number;
  setTimer: (fn: () => void, ms: number) => unknown;
  /** Starts a pending timer's full duration over, without a new timer (one heartbeat each). */
  refreshTimer: (handle: unknown) => void;
  clearTimer: (handle: unknown) => void;
};

export const systemClock: Clock = {
  mono: () => performance.now(),
  wall: () => Date.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms),
  refreshTimer: handle => {
    (handle as NodeJS.Timeout).refresh();
  },
  clearTimer: handle => clearTimeout(handle as NodeJS.Timeout),
};

export type Transition = {
  name: string;
  ports: ReadonlyArray<number>;
  state: ReporterState | 'forgotten';
  reason: string;
};

/** What the registry asks of the outside world; it never runs anything itself. */
export type RegistryEffects = {
  fence: (name: string, ports: ReadonlyArray<number>) => void;
  unfence: (name: string) => void;
  transition: (transition: Transition) => void;
  log: (level: 'error' | 'warn' | 'info' | 'debug', message: string, meta?: Record<string, unknown>) => void;
  /** A heartbeat request was refused (rate-limit the log by key). */
  refuse: (key: string, message: string, meta?: Record<string, unknown>) => void;
};

export type RegistryOptions = {
  /** ms without a heartbeat before fencing */
  timeoutMs: number;
  recover: number;
  protectPorts: ReadonlySet<number>;
  maxReporters: number;
};

export type ReporterRecord = ReporterSnapshot & {
  lastBeatMono: number;
  recoverStreak: number;
  timer: unknown;
  warnedSlowProbe: boolean;
};

export class Registry {
  readonly reporters = new Map<string, ReporterRecord>();
  heartbeatsAccepted = 0;

  constructor(private readonly options: RegistryOptions, private readonly effects: RegistryEffects, private readonly clock: Clock = systemClock) {
  }

  /** Start-up: reporters from the previous monitor's snapshot, each with a fresh timeout. */
  adopt(previous: ReadonlyArray<ReporterSnapshot>): void {
    for (const snapshot of previous) {
      if (this.reporters.size >= this.options.maxReporters)
        break;
      const record: ReporterRecord = {...snapshot, ports: [...snapshot.ports], lastBeatMono: this.clock.mono(), recoverStreak: 0, timer: null, warnedSlowProbe: false};
      this.reporters.set(record.name, record);
      if (record.state === 'fenced')
        this.effects.fence(record.name, record.ports);
      else if (record.state === 'healthy')
        this.arm(record);
    }
  }

  heartbeat(message: Heartbeat): void {
    const protect = this.options.protectPorts;
    const refused = message.ports.some(port => protect.has(port)) ? message.ports.filter(port => protect.has(port)) : [];
    const ports = refused.length === 0 ? message.ports : message.ports.filter(port => !protect.has(port));
    if (refused.length > 0)
      this.effects.refuse(`protect:${message.name}`, `${message.name} asked to fence protected port(s) ${refused.join(',')}: refused (--protect-ports)`, {reporter: message.name});

    let record = this.reporters.get(message.name);
    if (record === undefined) {
      if (this.reporters.size >= this.options.maxReporters) {
        this.effects.refuse('max-reporters', `heartbeat from new reporter ${message.name} refused: already tracking ${this.reporters.size} reporters (--max-reporters)`);
        return;
      }
      record = {
        name: message.name,
        pid: message.pid,
        ports,
        state: 'healthy',
        lastHeartbeatAt: null,
        fencedSince: null,
        overriddenAt: null,
        overriddenBy: null,
        fenceCount: 0,
        flapCount: 0,
        heartbeats: 0,
        lastProbeMs: null,
        interval: message.interval,
        probeTimeout: message.probeTimeout,
        reason: 'first heartbeat',
        lastBeatMono: this.clock.mono(),
        recoverStreak: 0,
        timer: null,
        warnedSlowProbe: false,
      };
      this.reporters.set(record.name, record);
      this.effects.log('info', `new reporter ${record.name}: ports ${ports.join(',') || '(none)'}`, {reporter: record.name, pid: message.pid});
      this.effects.transition({name: record.name, ports, state: 'healthy', reason: 'first heartbeat'});
    } else if (record.pid !== message.pid) {
      this.effects.log('info', `reporter ${record.name} restarted (pid ${record.pid} → ${message.pid})`, {reporter: record.name});
    }

    if (!record.warnedSlowProbe && message.probeTimeout * 1000 > this.options.timeoutMs / 3) {
      record.warnedSlowProbe = true;
      this.effects.log('warn', `${record.name}'s --probe-timeout (${message.probeTimeout} s) is more than a third of the monitor's --timeout (${this.options.timeoutMs / 1000} s): a slow probe can eat the fence window`, {reporter: record.name});
    }

    const now = this.clock.mono();
    const gap = now - record.lastBeatMono;
    const portsChanged = !samePorts(record.ports, ports);
    record.pid = message.pid;
    if (portsChanged)
      record.ports = ports;
    record.lastBeatMono = now;
    record.lastHeartbeatAt = this.clock.wall();
    record.lastProbeMs = message.probeMs;
    record.interval = message.interval;
    record.probeTimeout = message.probeTimeout;
    record.heartbeats += 1;
    this.heartbeatsAccepted += 1;

    switch (record.state) {
      case 'healthy':
        this.arm(record);
        break;
      case 'overridden':
        record.state = 'healthy';
        record.overriddenAt = null;
        record.overriddenBy = null;
        record.reason = 'heartbeat after override';
        this.arm(record);
        this.effects.log('info', `${record.name} is heartbeating again: healthy (override ended)`, {reporter: record.name});
        this.effects.transition({name: record.name, ports, state: 'healthy', reason: record.reason});
        break;
      case 'fenced':
        record.recoverStreak = gap <= this.options.timeoutMs ? record.recoverStreak + 1 : 1;
        if (record.recoverStreak >= this.options.recover) {
          record.state = 'healthy';
          record.fencedSince = null;
          record.flapCount += 1;
          record.reason = `${record.recoverStreak} consecutive heartbeats`;
          this.effects.unfence(record.name);
          this.arm(record);
          this.effects.log('info', `${record.name} recovered after ${record.recoverStreak} consecutive heartbeats: fence lifted`, {reporter: record.name, ports: ports.join(',')});
          this.effects.transition({name: record.name, ports, state: 'healthy', reason: record.reason});
        } else {
          if (portsChanged)
            this.effects.fence(record.name, ports);
          this.effects.log('debug', `${record.name} heartbeat ${record.recoverStreak}/${this.options.recover} towards recovery`, {reporter: record.name});
        }
        break;
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
    if (record.state === 'fenced') {
      this.effects.refuse(`goodbye:${message.name}`, `goodbye for ${message.name} refused: it is fenced, and only unblock lifts a fence`, {reporter: message.name});
      return;
    }
    this.clock.clearTimer(record.timer);
    this.reporters.delete(record.name);
    this.effects.log('info', `${record.name} said goodbye: forgotten`, {reporter: record.name});
    this.effects.transition({name: record.name, ports: record.ports, state: 'forgotten', reason: 'goodbye'});
  }

  /** Returns the names whose fence was lifted. */
  unblock(message: Unblock): Array<string> {
    const who = `${message.user} (pid ${message.pid})`;
    const targets = 'all' in message ? [...this.reporters.values()] : [this.reporters.get(message.name)].filter((r): r is ReporterRecord => r !== undefined);
    if (!('all' in message) && targets.length === 0)
      this.effects.log('warn', `unblock from ${who} for unknown reporter ${message.name}`);
    const lifted: Array<string> = [];
    for (const record of targets) {
      if (record.state !== 'fenced') {
        this.effects.log('info', `unblock from ${who}: ${record.name} is ${record.state}, nothing to lift`, {reporter: record.name});
        continue;
      }
      record.state = 'overridden';
      record.fencedSince = null;
      record.overriddenAt = this.clock.wall();
      record.overriddenBy = who;
      record.reason = `unblock by ${who}`;
      record.recoverStreak = 0;
      this.effects.unfence(record.name);
      this.effects.log('warn', `${record.name}: fence lifted by ${who}; overridden until its next heartbeat`, {reporter: record.name});
      this.effects.transition({name: record.name, ports: record.ports, state: 'overridden', reason: record.reason});
      lifted.push(record.name);
    }
    return lifted;
  }

  /** Called right after a heartbeat (or adoption) set lastBeatMono to now: the deadline is a full --timeout away. */
  private arm(record: ReporterRecord): void {
    if (record.timer !== null)
      this.clock.refreshTimer(record.timer);
    else
      record.timer = this.clock.setTimer(() => this.expire(record), this.options.timeoutMs);
  }

  private expire(record: ReporterRecord): void {
    record.timer = null;
    if (record.state !== 'healthy' || this.reporters.get(record.name) !== record)
      return;
    const silentMs = this.clock.mono() - record.lastBeatMono;
    record.state = 'fenced';
    record.fencedSince = this.clock.wall();
    record.fenceCount += 1;
    record.recoverStreak = 0;
    record.reason = `no heartbeat for ${(silentMs / 1000).toFixed(1)} s`;
    this.effects.fence(record.name, record.ports);
    this.effects.log('error', `${record.name}: ${record.reason}; fencing ports ${record.ports.join(',') || '(none)'}`, {reporter: record.name});
    this.effects.transition({name: record.name, ports: record.ports, state: 'fenced', reason: record.reason});
  }

  snapshot(): Array<ReporterSnapshot> {
    return [...this.reporters.values()].map(r => ({
      name: r.name,
      pid: r.pid,
      ports: [...r.ports],
      state: r.state,
      lastHeartbeatAt: r.lastHeartbeatAt,
      fencedSince: r.fencedSince,
      overriddenAt: r.overriddenAt,
      overriddenBy: r.overriddenBy,
      fenceCount: r.fenceCount,
      flapCount: r.flapCount,
      heartbeats: r.heartbeats,
      lastProbeMs: r.lastProbeMs,
      interval: r.interval,
      probeTimeout: r.probeTimeout,
      reason: r.reason,
    }));
  }

  close(): void {
    for (const record of this.reporters.values())
      this.clock.clearTimer(record.timer);
  }
}

function samePorts(a: ReadonlyArray<number>, b: ReadonlyArray<number>): boolean {
  return a.length === b.length && a.every((port, i) => port === b[i]);
}
