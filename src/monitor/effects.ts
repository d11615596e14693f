import {closeEstablished} from '../fencing';
import type {Runner} from '../fencing';
import type {Logger} from '../log';
import type {Transition} from './registry';

export const HOOK_DEADLINE_MS = 10_000;
/** A reporter's transitions waiting for its hook beyond this are dropped (oldest first) and counted. */
const HOOK_QUEUE_MAX = 16;
const HOOKS_AT_ONCE = 8;

/**
 * What only user space can do after a fence: close idle connections (`ss -K`)
 * and run the --on-change hook. Never on the fence path: the fence is in the
 * kernel already. At most one `ss -K` runs at a time, and one hook per reporter (a few
 * at once), each killed by process group at its deadline; the monitor never waits for either.
 */
export class SideEffects {
  private closing = false;
  private readonly portsToClose = new Set<number>();
  private unsupportedLogged = false;
  private readonly lanes = new Map<string, {running: boolean, queue: Array<Transition>}>();
  private hooksRunning = 0;
  private hooksDropped = 0;

  constructor(private readonly run: Runner, private readonly logger: Logger, private readonly onChange: string | undefined) {
  }

  closeConnections(ports: ReadonlyArray<number>): void {
    for (const port of ports)
      this.portsToClose.add(port);
    if (this.closing || this.portsToClose.size === 0)
      return;
    const batch = [...this.portsToClose];
    this.portsToClose.clear();
    this.closing = true;
    void closeEstablished(this.run, batch).then(result => {
      this.closing = false;
      if ('closed' in result) {
        if (result.closed > 0)
          this.logger.info('closed established connections to fenced ports', {ports: batch.join(','), closed: result.closed});
      } else if ('unsupported' in result) {
        if (!this.unsupportedLogged) {
          this.unsupportedLogged = true;
          this.logger.warn(`ss -K could not close idle connections (${result.unsupported}); they end on their next packet instead`, {ports: batch.join(',')});
        }
      } else {
        this.logger.warn(`ss -K failed (${result.failed}); idle connections end on their next packet instead`, {ports: batch.join(',')});
      }
      this.closeConnections([]);
    });
  }

  hook(transition: Transition): void {
    if (this.onChange === undefined)
      return;
    let lane = this.lanes.get(transition.name);
    if (lane === undefined) {
      lane = {running: false, queue: []};
      this.lanes.set(transition.name, lane);
    }
    lane.queue.push(transition);
    if (lane.queue.length > HOOK_QUEUE_MAX) {
      lane.queue.shift();
      this.hooksDropped += 1;
    }
    this.nextHooks();
  }

  /** One hook at a time per reporter (its alerts stay in order), a few reporters at once. */
  private nextHooks(): void {
    for (const [name, lane] of this.lanes) {
      if (this.hooksRunning >= HOOKS_AT_ONCE)
        return;
      if (lane.running)
        continue;
      const transition = lane.queue.shift();
      if (transition === undefined) {
        this.lanes.delete(name);
        continue;
      }
      this.runHook(lane, transition);
    }
  }

  private runHook(lane: {running: boolean}, transition: Transition): void {
    const program = this.onChange!;
    if (this.hooksDropped > 0) {
      this.logger.error(`--on-change fell behind: ${this.hooksDropped} transition(s) dropped`);
      this.hooksDropped = 0;
    }
    lane.running = true;
    this.hooksRunning += 1;
    void this.run([program], {
      env: {EBSMON_REPORTER: transition.name, EBSMON_PORTS: transition.ports.join(','), EBSMON_STATE: transition.state, EBSMON_REASON: transition.reason},
      timeoutMs: HOOK_DEADLINE_MS,
      maxOutputBytes: 64 * 1024,
    }).then(result => {
      lane.running = false;
      this.hooksRunning -= 1;
      if (result.spawnError !== undefined)
        this.logger.error(`--on-change ${program} could not start: ${result.spawnError}`, {reporter: transition.name});
      else if (result.timedOut)
        this.logger.error(`--on-change ${program} was killed after ${HOOK_DEADLINE_MS / 1000} s`, {reporter: transition.name});
      else if (result.code !== 0)
        this.logger.error(`--on-change ${program} failed (exit ${result.code ?? result.signal})`, {reporter: transition.name, stderr: result.stderr.trim().slice(0, 500)});
      this.nextHooks();
    });
  }
}
