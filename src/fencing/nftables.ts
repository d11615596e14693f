import type {Logger} from '../log';
import {RateLimitedLog} from '../log';
import type {SpawnHelper, StreamChild} from '../spawn';
import {describeRun} from './firewall';
import type {ApplyResult, DesiredReporter, Firewall, KernelView, ReleaseResult, Runner} from './firewall';
import {CAPABILITY_PORT, CLIENTS, LIST_TABLE, TABLE, VOICE, changesTransaction, commentFor, deleteTableTransaction, emptyChanges, isEmpty, isMissing, isTableDeletion, parseTable, releaseTransaction, replaceTransaction} from './nft';
import type {ListedTable, PortAlive, PortPlan, SetPair} from './nft';

/**
 * nft -i reads one command line at a time and prints results and errors to
 * the same FIFO (2>&1), in order. After every request we send a line that is
 * a lexer error by its first byte; nft echoes it back, so its echo marks the
 * end of the request's output, whether the request printed anything or not.
 */
const SENTINEL_PREFIX = '=ebsmon-ack-';
const CARET_LINE = /^\s*\^+\s*$/;

export type NftReply = {ok: boolean, output: string, ms: number, failure?: 'error' | 'timeout' | 'gone'};

/** Environment of every nft child: a history file on tmpfs (nft -i writes ~/.nft.history at exit), C messages. */
function nftEnv(dir: string): Record<string, string> {
  return {HOME: dir, LC_ALL: 'C'};
}

type Request = {line: string, token: string, deadlineMs: number, resolve: (reply: NftReply) => void};

/** One `nft -i` process: requests go in one at a time, each acknowledged by its sentinel. */
export class NftSession {
  private buffered = '';
  private skipCaret = false;
  private readonly queue: Array<Request> = [];
  private current: {request: Request, started: number, timer: NodeJS.Timeout} | null = null;
  private counter = 0;
  dead = false;

  constructor(readonly child: StreamChild, readonly generation: number) {
    child.onData(chunk => this.onData(chunk.toString('utf8')));
    void child.exited.then(() => this.fail('gone'));
  }

  get pid(): number | undefined {
    return this.child.pid();
  }

  request(line: string, deadlineMs: number): Promise<NftReply> {
    if (line.includes('\n'))
      throw new Error('an nft request is one line');
    return new Promise(resolve => {
      if (this.dead) {
        resolve({ok: false, output: 'nft writer gone', ms: 0, failure: 'gone'});
        return;
      }
      this.counter += 1;
      this.queue.push({line, token: `${SENTINEL_PREFIX}${this.generation}-${this.counter}`, deadlineMs, resolve});
      this.next();
    });
  }

  private next(): void {
    if (this.current !== null || this.dead)
      return;
    const request = this.queue.shift();
    if (request === undefined)
      return;
    const timer = setTimeout(() => this.fail('timeout'), request.deadlineMs);
    this.current = {request, started: performance.now(), timer};
    this.child.write(`${request.line}\n${request.token}\n`);
  }

  private onData(text: string): void {
    this.buffered += text;
    for (;;) {
      if (this.skipCaret) {
        const newline = this.buffered.indexOf('\n');
        if (newline === -1)
          return;
        if (CARET_LINE.test(this.buffered.slice(0, newline)))
          this.buffered = this.buffered.slice(newline + 1);
        this.skipCaret = false;
      }
      const current = this.current;
      if (current === null)
        return;
      const token = current.request.token;
      const at = this.buffered.startsWith(`${token}\n`) ? 0 : this.buffered.indexOf(`\n${token}\n`) + 1;
      if (at <= 0 && !this.buffered.startsWith(`${token}\n`))
        return;
      // The sentinel's own error line ("Error: syntax error, unexpected '='") precedes its echo.
      const before = this.buffered.slice(0, at);
      const errorLine = before.lastIndexOf('Error:');
      const output = errorLine === -1 ? before : before.slice(0, errorLine);
      this.buffered = this.buffered.slice(at + token.length + 1);
      this.skipCaret = true;
      clearTimeout(current.timer);
      this.current = null;
      const failed = /^Error:/m.test(output);
      current.request.resolve({ok: !failed, output: output.trimEnd(), ms: performance.now() - current.started, ...(failed ? {failure: 'error' as const} : {})});
      this.next();
    }
  }

  /** Every request in flight or queued fails; the process is killed (it may be stuck on a hung disk). */
  fail(why: 'timeout' | 'gone'): void {
    if (this.dead)
      return;
    this.dead = true;
    this.child.kill();
    const pending = [...(this.current === null ? [] : [this.current.request]), ...this.queue];
    if (this.current !== null)
      clearTimeout(this.current.timer);
    this.current = null;
    this.queue.length = 0;
    for (const request of pending)
      request.resolve({ok: false, output: why === 'timeout' ? `nft did not answer within ${request.deadlineMs} ms` : 'nft exited', ms: 0, failure: why});
  }
}

export type NftablesOptions = {
  logger: Logger;
  helper: SpawnHelper;
  /** A request not acknowledged in this long means the writer is stuck: it is replaced. */
  ackDeadlineMs?: number;
};

/** What the kernel holds for a port, as last acknowledged: one object per port, updated in place. */
type Applied = {comment: string, alive: {kind: PortAlive['kind'], ms: number, until: number}, certain: boolean};

/** One pair of sets (guarded and alive, or isolated and reachable) as the kernel holds it after the last acknowledged write. */
class PairState {
  readonly applied = new Map<number, Applied>();

  constructor(readonly sets: SetPair) {
  }

  /** The smallest transaction from what the kernel holds (as last acknowledged) to `plan`; '' when none is needed. */
  transaction(plan: Map<number, PlanEntry>, updatesTimeouts: boolean): string {
    const changes = emptyChanges();
    for (const [port, want] of plan) {
      const have = this.applied.get(port);
      if (have === undefined || have.comment !== want.comment) {
        if (have !== undefined)
          changes.guardedDelete.push(port);
        changes.guardedAdd.push({port, comment: want.comment});
      }
      const alive = want.alive;
      if (alive.kind === 'fenced') {
        if (have === undefined || have.alive.kind !== 'fenced')
          changes.close.push(port);
      } else if (alive.kind === 'open') {
        if (have?.alive.kind !== 'open')
          changes.open.push(port);
      } else if (have?.alive.kind !== 'armed' || have.alive.until !== alive.until) {
        if (updatesTimeouts && have?.certain === true && have.alive.kind === 'armed') {
          const ms = rearmTimeout(have.alive.ms, alive.ms);
          alive.ms = ms;
          changes.rearm.push({port, ms});
        } else {
          changes.arm.push({port, ms: alive.ms});
        }
      }
    }
    for (const port of this.applied.keys())
      if (!plan.has(port)) {
        changes.guardedDelete.push(port);
        changes.close.push(port);
      }
    return isEmpty(changes) ? '' : changesTransaction(changes, this.sets);
  }

  /** The kernel acknowledged `plan`: returns the ports it fenced that were not fenced before. */
  commit(plan: Map<number, PlanEntry>): Array<number> {
    const newlyFenced: Array<number> = [];
    for (const [port, want] of plan) {
      const before = this.applied.get(port);
      if (want.alive.kind === 'fenced' && (before === undefined || before.alive.kind !== 'fenced'))
        newlyFenced.push(port);
      const alive = want.alive;
      const ms = alive.kind === 'armed' ? alive.ms : 0;
      const until = alive.until ?? 0;
      if (before === undefined) {
        this.applied.set(port, {comment: want.comment, alive: {kind: alive.kind, ms, until}, certain: true});
      } else {
        before.comment = want.comment;
        before.certain = true;
        before.alive.kind = alive.kind;
        before.alive.ms = ms;
        before.alive.until = until;
      }
    }
    for (const port of [...this.applied.keys()])
      if (!plan.has(port))
        this.applied.delete(port);
    return newlyFenced;
  }

  opened(ports: ReadonlyArray<number>): void {
    for (const port of ports) {
      const entry = this.applied.get(port);
      if (entry !== undefined) {
        entry.alive.kind = 'open';
        entry.alive.ms = 0;
        entry.alive.until = 0;
      }
    }
  }

  /** A write failed: what the kernel holds is unknown until the next replace. */
  uncertain(): void {
    for (const entry of this.applied.values())
      entry.certain = false;
  }

  /** What a read-back finds wrong, in words. */
  problems(guard: Map<number, unknown>, live: Map<number, {timeoutMs: number | null}>, now: number): Array<string> {
    const problems: Array<string> = [];
    const {guard: guardName} = this.sets;
    for (const [port, have] of this.applied) {
      if (!guard.has(port))
        problems.push(`port ${port} is not in ${guardName}`);
      const alive = live.get(port);
      // An armed element that is gone but not yet due, or an element where a fence should be.
      if (have.alive.kind === 'fenced' && alive !== undefined)
        problems.push(`fenced port ${port} (${guardName}) is alive`);
      if (have.alive.kind === 'open' && (alive === undefined || alive.timeoutMs !== null))
        problems.push(`open port ${port} (${guardName}) is not open`);
      if (have.alive.kind === 'armed' && alive === undefined && (have.alive.until ?? 0) > now + 1_000)
        problems.push(`armed port ${port} (${guardName}) lost its deadline`);
    }
    for (const port of guard.keys())
      if (!this.applied.has(port))
        problems.push(`port ${port} is in ${guardName} but not ours`);
    return problems;
  }
}

const DEFAULT_ACK_MS = 3_000;
const JIFFY_SAFE_MS = 10;
/**
 * How early, besides a write's lead, an element can run out: a re-add within
 * JIFFY_SAFE_MS of the last timeout is written that much short, and the
 * kernel counts timeouts in jiffies (up to 10 ms each).
 */
const EARLY_MS = 2 * JIFFY_SAFE_MS;
const START_DEADLINE_MS = 10_000;

/**
 * The nftables backend: the kernel holds every reporter's deadline.
 *
 * All writes go through one long-lived `nft -i`, started and warmed (a real
 * transaction and a read-back) at start-up, so no exec and no disk is on the
 * path that re-arms or fences. A writer that dies or stops answering is killed
 * and replaced in the background through the spawn helper; until the new one
 * answers, applies fail and are retried, and the kernel's deadlines run on.
 */
export class NftablesFirewall implements Firewall {
  readonly name = 'nftables' as const;
  readonly holdsDeadlines = true;
  private session: NftSession | null = null;
  private starting: Promise<NftSession | null> | null = null;
  private generation = 0;
  private readonly clients = new PairState(CLIENTS);
  private readonly voice = new PairState(VOICE);
  /** Until a transaction has been acknowledged, the table is written whole. */
  private replaceNext = true;
  /** The kernel changes an element's timeout on a plain re-add when it differs (Linux 6.10+?): learnt at start-up. */
  private updatesTimeouts = false;
  private watcher: StreamChild | null = null;
  private watcherBuffer = '';
  private readonly driftListeners: Array<() => void> = [];
  private closed = false;
  private readonly limited: RateLimitedLog;
  private readonly ackMs: number;
  /** How long nft takes per byte of a transaction: the fastest rate lately seen in the acknowledgements. */
  private msPerByte = 0.001;

  constructor(private readonly options: NftablesOptions) {
    this.limited = new RateLimitedLog(options.logger, 30_000);
    this.ackMs = options.ackDeadlineMs ?? DEFAULT_ACK_MS;
  }

  /** Start-up: an `nft -i` that answers, or null (no nft, or no nf_tables in the kernel). */
  async start(): Promise<{ok: true} | {ok: false, detail: string}> {
    const session = await this.launch();
    if (session === null)
      return {ok: false, detail: this.lastLaunchError};
    this.session = session;
    const probe = await session.request(`list tables`, START_DEADLINE_MS);
    if (!probe.ok)
      return {ok: false, detail: probe.output.split('\n')[0] ?? 'nft failed'};
    this.startWatcher();
    return {ok: true};
  }

  private lastLaunchError = '';

  private async launch(): Promise<NftSession | null> {
    this.generation += 1;
    const child = this.options.helper.stream(['nft', '-i'], {env: nftEnv(this.options.helper.dir)});
    const deadline = new Promise<'timeout'>(resolve => {
      setTimeout(() => resolve('timeout'), START_DEADLINE_MS).unref();
    });
    try {
      if (await Promise.race([child.ready.then(() => 'ready' as const), deadline]) === 'timeout') {
        child.kill();
        this.lastLaunchError = `nft -i did not start within ${START_DEADLINE_MS} ms`;
        return null;
      }
    } catch (error) {
      this.lastLaunchError = `cannot run nft: ${(error as Error).message}`;
      return null;
    }
    const session = new NftSession(child, this.generation);
    // A request on a fresh writer also pages in what it needs.
    const warm = await session.request(LIST_TABLE, START_DEADLINE_MS);
    if (warm.failure === 'timeout' || warm.failure === 'gone') {
      this.lastLaunchError = warm.output;
      return null;
    }
    return session;
  }

  /** The writer, or null while a replacement is starting (in the background: the caller retries). */
  private writer(): NftSession | null {
    if (this.session !== null && !this.session.dead)
      return this.session;
    if (this.session !== null) {
      this.options.logger.error(`nft writer (pid ${this.session.pid}) stopped answering; starting a new one`);
      this.session = null;
      this.replaceNext = true;
    }
    if (this.starting === null && !this.closed) {
      this.starting = this.launch().then(session => {
        this.starting = null;
        if (session !== null && !this.closed) {
          this.session = session;
          this.options.logger.info(`new nft writer running (pid ${session.pid})`);
          this.notifyDrift();
        } else if (!this.closed) {
          this.limited.log('error', 'launch', `cannot start a new nft writer: ${this.lastLaunchError}; retrying`);
          setTimeout(() => this.notifyDrift(), 1_000).unref();
        }
        return session;
      });
    }
    return null;
  }

  private async request(line: string): Promise<NftReply> {
    const session = this.writer();
    if (session === null)
      return {ok: false, output: 'no nft writer yet (a new one is starting)', ms: 0, failure: 'gone'};
    // Large transactions take longer to parse (about 25 µs a port).
    const reply = await session.request(line, this.ackMs + Math.floor(line.length / 100));
    if (reply.failure === 'timeout' || reply.failure === 'gone')
      this.writer();
    return reply;
  }

  async inspect(): Promise<KernelView | null> {
    const listed = await this.read();
    if (listed === 'failed')
      return null;
    const view: KernelView = {ports: new Map(), isolated: new Map()};
    if (listed === 'missing')
      return view;
    for (const [guard, live, into] of [[listed.guarded, listed.alive, view.ports], [listed.isolated, listed.reachable, view.isolated]] as const)
      for (const [port, element] of guard) {
        const alive = live.get(port);
        into.set(port, {
          owners: (element.comment ?? '').split(',').filter(Boolean),
          alive: alive === undefined ? 'fenced' : {leftMs: alive.timeoutMs === null ? null : alive.expiresMs ?? alive.timeoutMs},
        });
      }
    return view;
  }

  private async read(): Promise<ListedTable | 'missing' | 'failed'> {
    const reply = await this.request(LIST_TABLE);
    if (reply.ok) {
      const table = parseTable(reply.output);
      return table ?? 'failed';
    }
    return reply.failure === 'error' && isMissing(reply.output) ? 'missing' : 'failed';
  }

  async apply(desired: ReadonlyArray<DesiredReporter>): Promise<ApplyResult> {
    const replacing = this.replaceNext;
    const render = (at: number) => {
      const plans = {clients: planPorts(desired, at, 'clients'), voice: planPorts(desired, at, 'voice')};
      if (replacing)
        return {plans, line: replaceTransaction([...plans.clients.values()], [...plans.voice.values()])};
      const text = [this.clients.transaction(plans.clients, this.updatesTimeouts), this.voice.transaction(plans.voice, this.updatesTimeouts)].filter(part => part !== '').join('; ');
      return {plans, line: text === '' ? null : text};
    };
    const now = performance.now();
    let {plans, line} = render(now);
    if (line === null)
      return {ok: true, newlyFenced: [], earlyMs: EARLY_MS};
    // The kernel starts a timeout when it commits, after nft has read and parsed the whole
    // line (about 1 µs a byte: libedit reads one byte at a time). For a large transaction,
    // write the time left as of then, or 1000 deadlines would land up to 50 ms late.
    const lead = Math.min(500, this.msPerByte * line.length);
    if (lead >= 1)
      ({plans, line} = render(now + lead));
    if (line === null)
      return {ok: true, newlyFenced: [], earlyMs: EARLY_MS};
    const reply = await this.request(line);
    // The fastest recent rate: a slow answer says the machine was busy, not that nft got slower.
    if (reply.ok && line.length >= 2_000)
      this.msPerByte = Math.min(reply.ms / line.length, this.msPerByte * 1.1);
    if (!reply.ok) {
      if (!replacing && reply.failure === 'error' && isMissing(reply.output))
        this.lostTable();
      this.replaceNext = true;
      this.clients.uncertain();
      this.voice.uncertain();
      return {ok: false, detail: reply.output.split('\n').slice(0, 3).join(' | ') || reply.failure || 'failed'};
    }
    const newlyFenced = this.clients.commit(plans.clients);
    this.voice.commit(plans.voice);
    this.replaceNext = false;
    // An element written with the time left as of now + lead runs out up to `lead` early if nft commits at once.
    return {ok: true, newlyFenced, earlyMs: EARLY_MS + Math.max(0, lead), held: plans};
  }

  async release(ports: {clients: ReadonlyArray<number>, voice: ReadonlyArray<number>}): Promise<ReleaseResult> {
    const clients = await this.releasePair(this.clients, ports.clients);
    if ('failed' in clients)
      return clients;
    const voice = await this.releasePair(this.voice, ports.voice);
    if ('failed' in voice)
      return voice;
    return {opened: clients.opened, expired: clients.expired, voiceOpened: voice.opened, voiceExpired: voice.expired};
  }

  /**
   * Ports of one pair of sets get elements with no timeout, in one transaction
   * while every one is still alive, else one at a time: the delete of an
   * element that has run out fails (ENOENT), and its whole transaction with it.
   */
  private async releasePair(pair: PairState, ports: ReadonlyArray<number>): Promise<{opened: Array<number>, expired: Array<number>} | {failed: string}> {
    const opened: Array<number> = [];
    const expired: Array<number> = [];
    const attempt = async (batch: ReadonlyArray<number>): Promise<'ok' | 'expired' | {failed: string}> => {
      if (batch.length === 0)
        return 'ok';
      const reply = await this.request(releaseTransaction(batch, pair.sets));
      if (reply.ok) {
        opened.push(...batch);
        pair.opened(batch);
        return 'ok';
      }
      return reply.failure === 'error' && isMissing(reply.output) ? 'expired' : {failed: reply.output.split('\n')[0] || reply.failure || 'failed'};
    };
    let result = await attempt(ports);
    if (result === 'expired') {
      const listed = await this.read();
      if (typeof listed !== 'object')
        return {failed: `cannot read table inet ebsmon back (${listed})`};
      const live = listed[pair.sets.live];
      const alive = ports.filter(port => live.has(port));
      expired.push(...ports.filter(port => !live.has(port)));
      result = await attempt(alive);
      if (result === 'expired') {
        for (const port of alive) {
          const one = await attempt([port]);
          if (one === 'expired')
            expired.push(port);
          else if (one !== 'ok')
            return one;
        }
        result = 'ok';
      }
    }
    return result === 'ok' ? {opened, expired} : result;
  }

  /**
   * Learns whether a plain re-add updates an element's timeout, on a port
   * nobody can fence (0). Then re-arming costs one add per port instead of
   * add, delete, add (measured: 23 vs 53 µs a port with nft 1.0.6).
   */
  async learnCapabilities(): Promise<void> {
    const element = (ms: number) => `${CAPABILITY_PORT} timeout ${ms}ms`;
    const first = await this.request(`add element inet ebsmon alive { ${element(60_000)} }; delete element inet ebsmon alive { ${CAPABILITY_PORT} }; add element inet ebsmon alive { ${element(60_000)} }`);
    const second = first.ok ? await this.request(`add element inet ebsmon alive { ${element(30_000)} }`) : first;
    const listed = second.ok ? await this.read() : 'failed';
    const seen = typeof listed === 'object' ? listed.alive.get(CAPABILITY_PORT) : undefined;
    this.updatesTimeouts = seen?.timeoutMs === 30_000 && (seen.expiresMs ?? Infinity) <= 30_000;
    await this.request(`add element inet ebsmon alive { ${CAPABILITY_PORT} }; delete element inet ebsmon alive { ${CAPABILITY_PORT} }`);
  }

  get rearmMethod(): string {
    return this.updatesTimeouts ? 'add (the kernel updates timeouts)' : 'add, delete, add';
  }

  async check(): Promise<boolean> {
    if (this.replaceNext)
      return false;
    const listed = await this.read();
    if (listed === 'failed')
      return this.session !== null && !this.session.dead;
    if (listed === 'missing') {
      this.lostTable();
      return false;
    }
    const now = performance.now();
    const problems: Array<string> = [...listed.unexpected];
    if (!listed.ruleInPlace)
      problems.push('the fence rule is missing or changed');
    problems.push(...this.clients.problems(listed.guarded, listed.alive, now), ...this.voice.problems(listed.isolated, listed.reachable, now));
    if (problems.length === 0)
      return true;
    this.options.logger.warn('the ebsmon table was changed behind its back; rewriting it', {problems: problems.slice(0, 5).join('; ')});
    this.replaceNext = true;
    return false;
  }

  private lostTable(): void {
    if (!this.replaceNext)
      this.options.logger.warn('table inet ebsmon was deleted behind ebsmon\'s back (flush ruleset?); re-creating it with every fence and deadline');
    this.replaceNext = true;
  }

  onDrift(listener: () => void): void {
    this.driftListeners.push(listener);
  }

  private notifyDrift(): void {
    for (const listener of this.driftListeners)
      listener();
  }

  /** `nft monitor tables`: a `flush ruleset` (nftables.service reload) shows up here within milliseconds. */
  private startWatcher(): void {
    if (this.closed)
      return;
    const watcher = this.options.helper.stream(['nft', 'monitor', 'tables'], {env: nftEnv(this.options.helper.dir)});
    this.watcher = watcher;
    this.watcherBuffer = '';
    watcher.onData(chunk => {
      this.watcherBuffer += chunk.toString('utf8');
      let newline: number;
      while ((newline = this.watcherBuffer.indexOf('\n')) !== -1) {
        const line = this.watcherBuffer.slice(0, newline);
        this.watcherBuffer = this.watcherBuffer.slice(newline + 1);
        // Our own replace deletes the table too: the read-back this asks for tells the two apart.
        if (isTableDeletion(line))
          this.notifyDrift();
      }
    });
    void watcher.exited.then(() => {
      if (this.closed)
        return;
      this.limited.log('warn', 'watcher', 'nft monitor exited; restarting it (a deleted table is then noticed by the periodic check)');
      setTimeout(() => this.startWatcher(), 1_000).unref();
    });
  }

  /** Stops the writer and the watcher; the table stays as the last apply left it. */
  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.kill();
    this.session?.fail('gone');
  }
}

/**
 * The timeout for a plain re-add. The kernel applies one only when the
 * timeout differs from the element's, in jiffies (4 ms at HZ=250, 10 ms at
 * HZ=100), so a value within 10 ms of the last one sent becomes 10 ms less
 * than it: a deadline may come that much early, never late.
 */
export function rearmTimeout(lastMs: number, wantMs: number): number {
  const last = Math.floor(lastMs);
  const want = Math.floor(wantMs);
  return Math.abs(want - last) < JIFFY_SAFE_MS ? Math.max(1, last - JIFFY_SAFE_MS) : want;
}

type PlanEntry = PortPlan & {alive: PortAlive & {until?: number}};
const FENCED: PortAlive = Object.freeze({kind: 'fenced'});
const OPEN: PortAlive = Object.freeze({kind: 'open'});

/**
 * Per port, what the kernel should hold: a port guarded by several reporters
 * is fenced if any of them is, else armed to the earliest of their deadlines,
 * else open. One pass, one object per port: it runs on every flush.
 */
export function planPorts(desired: ReadonlyArray<DesiredReporter>, now: number, which: 'clients' | 'voice' = 'clients'): Map<number, PlanEntry> {
  const plan = new Map<number, PlanEntry>();
  let shared = false;
  for (const reporter of desired) {
    const arm = which === 'clients' ? reporter.arm : reporter.voice;
    const ports = which === 'clients' ? reporter.ports : reporter.isolate;
    if (ports.length === 0)
      continue;
    const alive: PortAlive & {until?: number} = arm.state === 'fenced' || (arm.state === 'armed' && arm.until <= now + 1) ? FENCED
      : arm.state === 'open' ? OPEN : {kind: 'armed', ms: arm.until - now, until: arm.until};
    for (const port of ports) {
      const entry = plan.get(port);
      if (entry === undefined) {
        plan.set(port, {port, comment: reporter.name, alive: alive.kind === 'armed' && ports.length > 1 ? {...alive} : alive});
        continue;
      }
      shared = true;
      entry.comment = `${entry.comment},${reporter.name}`;
      const have = entry.alive;
      if (have.kind === 'fenced' || alive.kind === 'fenced')
        entry.alive = FENCED;
      else if (alive.kind === 'armed' && (have.kind === 'open' || (have.until ?? Infinity) > alive.until!))
        entry.alive = {...alive};
    }
  }
  if (shared)
    for (const entry of plan.values())
      if (entry.comment.includes(','))
        entry.comment = commentFor(entry.comment.split(',').sort());
  return plan;
}

export const NFT_TOOL_DEADLINE_MS = 8_000;

/** For `unblock` and tests: `nft list table inet ebsmon` once. */
export async function listTableOnce(run: Runner): Promise<ListedTable | 'missing' | {failed: string}> {
  const result = await run(['nft', LIST_TABLE], {timeoutMs: NFT_TOOL_DEADLINE_MS, env: {LC_ALL: 'C'}});
  if (result.code === 0)
    return parseTable(result.stdout) ?? {failed: 'unreadable listing'};
  if (result.spawnError === undefined && isMissing(result.stderr))
    return 'missing';
  return {failed: describeRun(result, NFT_TOOL_DEADLINE_MS)};
}

/**
 * `unblock` with no monitor running: the named reporter's ports get elements
 * without a deadline (open until the next monitor re-arms them); `null`
 * (--all) deletes the table. A port another reporter guards too is left as
 * the kernel holds it, unless each of the others is overridden as well: with
 * no monitor, nothing has proven their disks, and the kernel's word stands.
 * Returns the ports opened and the ones left.
 */
export async function openWithoutMonitor(run: Runner, name: string | null, ports: ReadonlyArray<number>, overridden: ReadonlySet<string>): Promise<{opened: Array<number>, shared: Array<number>, tablePresent: boolean} | {failed: string}> {
  const listed = await listTableOnce(run);
  if (listed === 'missing')
    return {opened: [], shared: [], tablePresent: false};
  if ('failed' in listed)
    return listed;
  let text: string;
  let opened: Array<number>;
  let shared: Array<number> = [];
  if (name === null) {
    opened = [...listed.guarded.keys()].filter(port => !listed.alive.has(port));
    text = deleteTableTransaction();
  } else {
    const ownersOf = (port: number) => (listed.guarded.get(port)?.comment ?? '').split(',').filter(Boolean);
    const mine = [...new Set([...ports, ...[...listed.guarded.keys()].filter(port => ownersOf(port).includes(name))])].filter(port => listed.guarded.has(port)).sort((a, b) => a - b);
    const alone = (port: number) => ownersOf(port).every(owner => owner === name || overridden.has(owner));
    shared = mine.filter(port => !alone(port));
    const toOpen = mine.filter(alone);
    // Fenced ones, and armed ones too: an override has no deadline.
    opened = toOpen.filter(port => listed.alive.get(port)?.timeoutMs !== null || !listed.alive.has(port));
    if (opened.length === 0)
      return {opened, shared, tablePresent: true};
    const list = opened.join(', ');
    text = `add element ${TABLE} alive { ${list} }; delete element ${TABLE} alive { ${list} }; add element ${TABLE} alive { ${list} }`;
  }
  const result = await run(['nft', '-f', '-'], {timeoutMs: NFT_TOOL_DEADLINE_MS, input: `${text}\n`, env: {LC_ALL: 'C'}});
  if (result.code !== 0)
    return {failed: describeRun(result, NFT_TOOL_DEADLINE_MS)};
  return {opened, shared, tablePresent: true};
}
