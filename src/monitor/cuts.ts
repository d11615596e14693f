import {SocketCutter} from '../fencing';
import type {CutKind, Held, HeldPort} from '../fencing';
import type {Logger} from '../log';
import {RateLimitedLog} from '../log';
import type {SpawnHelper} from '../spawn';

/** What the cutter is doing, for the snapshot, status and metrics. */
export type CutterState =
  /** Running, and this kernel destroys sockets. */
  | {state: 'ok', pid: number}
  /** Running, but this kernel refuses SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY off). */
  | {state: 'unsupported', detail: string}
  /** Not running: could not start (the monitor falls back to `ss -K`, which needs an exec). */
  | {state: 'none', detail: string};

/** What was last told to the cutter for a port: a deadline (monotonic ms), a cut, or nothing. */
type Told = number | 'fenced' | 'open';

const KINDS: ReadonlyArray<readonly [keyof Held, CutKind]> = [['clients', 'in'], ['voice', 'out']];
const RESTART_MS = 1_000;

/**
 * Waiting clients are cut at the deadline: a client that sent its query and
 * waits sends nothing more, so only a socket destroyed on this host ends its
 * wait. After every acknowledged write, the socket cutter (a resident process
 * of its own, src/fencing/cutter.ts) is handed each port's new deadline, or
 * told to cut it now (fenced) or never (open); it then cuts at each deadline
 * by itself, with the monitor running, frozen or dead. With a backend that
 * holds no deadline (iptables) it only cuts at a fence.
 *
 * Only changes are sent: a port re-armed to the same deadline is not told
 * again. A cutter that dies is replaced and told everything again.
 */
export class CutSchedule {
  private cutter: SocketCutter | null = null;
  private state: CutterState = {state: 'none', detail: 'not started'};
  private readonly told = {in: new Map<number, Told>(), out: new Map<number, Told>()};
  private last: Held | null = null;
  private closed = false;
  private readonly limited: RateLimitedLog;

  constructor(private readonly helper: SpawnHelper, private readonly logger: Logger, private readonly holdsDeadlines: boolean) {
    this.limited = new RateLimitedLog(logger, 10_000);
  }

  /** Start-up: a warmed cutter, or why there is none (said once in the log, and kept for status). */
  async start(): Promise<CutterState> {
    const started = await SocketCutter.start({helper: this.helper});
    if (!started.ok) {
      this.state = {state: 'none', detail: started.detail};
      this.logger.warn(`no socket cutter (${started.detail}): clients already waiting on a fenced port are cut by ss -K, an exec that a hung root disk can stall`);
      return this.state;
    }
    const cutter = started.cutter;
    for (const warning of cutter.warnings)
      this.logger.warn(`socket cutter: ${warning}`);
    if (!cutter.supported) {
      this.state = {state: 'unsupported', detail: cutter.unsupportedDetail ?? 'unknown'};
      this.logger.warn(`this kernel does not destroy sockets (${this.state.detail}; CONFIG_INET_DIAG_DESTROY off?): clients already waiting on a fenced port are not cut; they end on their next packet, or their own timeout`);
      cutter.quit();
      return this.state;
    }
    this.adopt(cutter);
    this.logger.info(`socket cutter running (pid ${cutter.pid}): it cuts clients waiting on a fenced port at its deadline by itself, even while this monitor is stopped`);
    this.handOver(cutter);
    return this.state;
  }

  private adopt(cutter: SocketCutter): void {
    this.cutter = cutter;
    this.state = {state: 'ok', pid: cutter.pid ?? 0};
    cutter.onCut(cut => {
      if (cut.sockets > 0)
        this.logger.info(cut.kind === 'in' ? `cut ${cut.sockets} connection(s) of clients waiting on fenced port ${cut.port}` : `cut ${cut.sockets} connection(s) of this host to isolated port ${cut.port}`, {port: cut.port});
    });
    cutter.onError(text => this.limited.log('warn', 'cutter-error', `socket cutter: ${text}`));
    cutter.onExit(code => {
      if (this.closed || this.cutter !== cutter)
        return;
      this.cutter = null;
      this.state = {state: 'none', detail: `exited (${code ?? 'spawn helper gone'})`};
      this.logger.error(`the socket cutter (pid ${cutter.pid}) exited (${code ?? 'spawn helper gone'}); starting a new one`);
      setTimeout(() => void this.restart(), RESTART_MS).unref();
    });
  }

  private async restart(): Promise<void> {
    if (this.closed)
      return;
    const started = await SocketCutter.start({helper: this.helper});
    if (this.closed) {
      if (started.ok)
        started.cutter.quit();
      return;
    }
    if (!started.ok || !started.cutter.supported) {
      this.limited.log('error', 'cutter-restart', `cannot start a new socket cutter (${started.ok ? started.cutter.unsupportedDetail : started.detail}); retrying`);
      if (started.ok)
        started.cutter.quit();
      setTimeout(() => void this.restart(), RESTART_MS).unref();
      return;
    }
    this.adopt(started.cutter);
    this.logger.info(`new socket cutter running (pid ${started.cutter.pid}); every deadline handed to it again`);
    this.handOver(started.cutter);
  }

  /** Every deadline the kernel holds, then the takeover: a predecessor's cuts stop only once this one has them all. */
  private handOver(cutter: SocketCutter): void {
    this.told.in.clear();
    this.told.out.clear();
    if (this.last !== null)
      this.held(this.last);
    cutter.takeOver();
  }

  get status(): CutterState {
    return this.state;
  }

  /** True when waiting clients are cut here (else the monitor's `ss -K` must try). */
  get cutting(): boolean {
    return this.cutter !== null;
  }

  /** After an acknowledged write: what the kernel holds now. */
  held(held: Held): void {
    this.last = held;
    const cutter = this.cutter;
    if (cutter === null)
      return;
    for (const [which, kind] of KINDS) {
      const told = this.told[kind];
      const ports = held[which];
      for (const [port, entry] of ports) {
        const want = this.wanted(entry);
        if (told.get(port) === want)
          continue;
        told.set(port, want);
        if (want === 'fenced')
          cutter.cutNow(kind, port);
        else if (want === 'open')
          cutter.clear(kind, port);
        else
          cutter.arm(kind, port, want);
      }
      for (const port of told.keys())
        if (!ports.has(port)) {
          told.delete(port);
          cutter.clear(kind, port);
        }
    }
  }

  private wanted(entry: HeldPort): Told {
    const alive = entry.alive;
    if (alive.kind === 'armed')
      return this.holdsDeadlines && alive.until !== undefined ? alive.until : 'open';
    return alive.kind;
  }

  /**
   * A clean stop: ports left open with no deadline are never cut; every
   * other deadline stays with the cutter, which cuts it if nothing re-arms it
   * (the next monitor's cutter takes over from it).
   */
  stop(released: {clients: ReadonlyArray<number>, voice: ReadonlyArray<number>}): void {
    this.closed = true;
    const cutter = this.cutter;
    if (cutter === null)
      return;
    for (const port of released.clients)
      cutter.clear('in', port);
    for (const port of released.voice)
      cutter.clear('out', port);
  }
}
