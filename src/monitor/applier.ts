import type {ApplyResult, DesiredReporter, Firewall} from '../fencing';
import type {Clock, Urgency} from './registry';

export type ApplierOptions = {
  firewall: Firewall;
  /** The state the firewall should hold, read at the moment an apply starts. */
  desired: () => ReadonlyArray<DesiredReporter>;
  clock: Clock;
  /** Re-arms wait at most this long to share a transaction (deadlines are written as time left, so waiting costs no accuracy). */
  batchMs?: number;
  /** Read the kernel back and repair it at least this often. */
  reconcileMs: number;
  onApplied: (result: ApplyResult) => void;
};

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;

/**
 * The one serial loop that owns the firewall: applies and read-backs never
 * overlap, so a reconcile cannot race an apply. Fences and unfences go at
 * once; re-arms are batched (a flush at least every `batchMs` while any are
 * pending); failures are retried with backoff.
 */
export class Applier {
  private running = false;
  private urgent = false;
  private rearmSince: number | null = null;
  private checkDue = false;
  private retryDelay = 0;
  private retryAt: number | null = null;
  private wake: unknown = null;
  private wakeAt = Infinity;
  private reconcile: unknown = null;
  private closed = false;
  private idle: Array<() => void> = [];
  private readonly batchMs: number;

  constructor(private readonly options: ApplierOptions) {
    this.batchMs = options.batchMs ?? 100;
  }

  startReconciling(): void {
    const tick = () => {
      this.reconcile = this.options.clock.setTimer(tick, this.options.reconcileMs);
      this.checkDue = true;
      this.kick();
    };
    this.reconcile = this.options.clock.setTimer(tick, this.options.reconcileMs);
  }

  schedule(urgency: Urgency): void {
    if (this.closed)
      return;
    if (urgency === 'now')
      this.urgent = true;
    else if (this.rearmSince === null)
      this.rearmSince = this.options.clock.mono();
    this.kick();
  }

  /** Something outside may have changed the kernel (a deleted table, a new writer): read it back now, skipping any backoff. */
  checkSoon(): void {
    if (this.closed)
      return;
    this.retryAt = null;
    this.checkDue = true;
    this.kick();
  }

  /** Resolves once no apply is running or pending (tests, start-up, stop). */
  settled(): Promise<void> {
    if (!this.running && !this.pending())
      return Promise.resolve();
    return new Promise(resolve => this.idle.push(resolve));
  }

  private pending(): boolean {
    return this.urgent || this.rearmSince !== null || this.checkDue;
  }

  private kick(): void {
    if (this.running || this.closed)
      return;
    const at = this.nextRunAt();
    if (at === null)
      return;
    const delay = Math.max(0, at - this.options.clock.mono());
    // Coalesces a burst (1000 fences from one FIFO read) into one apply, even at delay 0.
    if (this.wake !== null && this.wakeAt <= at)
      return;
    this.options.clock.clearTimer(this.wake);
    this.wakeAt = at;
    this.wake = this.options.clock.setTimer(() => {
      this.wake = null;
      this.wakeAt = Infinity;
      void this.loop();
    }, delay);
  }

  /** When the loop has work next: null when it has none. */
  private nextRunAt(): number | null {
    const now = this.options.clock.mono();
    let at: number | null = null;
    if (this.urgent)
      at = now;
    else if (this.rearmSince !== null)
      at = this.rearmSince + this.batchMs;
    if (this.checkDue)
      at = now;
    if (at !== null && this.retryAt !== null)
      at = Math.max(at, this.retryAt);
    return at;
  }

  private async loop(): Promise<void> {
    if (this.running || this.closed)
      return;
    this.running = true;
    try {
      while (!this.closed) {
        const now = this.options.clock.mono();
        if (this.retryAt !== null && this.retryAt > now)
          break;
        // A read-back first: what it finds decides how the next apply writes (changes, or the whole table).
        if (this.checkDue) {
          this.checkDue = false;
          if (!await this.options.firewall.check())
            this.urgent = true;
        } else if (this.urgent || (this.rearmSince !== null && this.rearmSince + this.batchMs <= now)) {
          this.urgent = false;
          this.rearmSince = null;
          await this.applyOnce();
        } else {
          break;
        }
      }
    } finally {
      this.running = false;
    }
    this.kick();
    if (!this.pending() || this.closed) {
      const idle = this.idle;
      this.idle = [];
      for (const resolve of idle)
        resolve();
    }
  }

  private async applyOnce(): Promise<ApplyResult> {
    const result = await this.options.firewall.apply(this.options.desired());
    if (result.ok) {
      this.retryDelay = 0;
      this.retryAt = null;
    } else {
      this.retryDelay = Math.min(Math.max(this.retryDelay * 2, RETRY_FIRST_MS), RETRY_MAX_MS);
      this.retryAt = this.options.clock.mono() + this.retryDelay;
      this.urgent = true;
    }
    this.options.onApplied(result);
    return result;
  }

  /** Waits for the apply in progress, then writes the final state once. */
  async stop(final: ReadonlyArray<DesiredReporter>): Promise<ApplyResult> {
    this.closed = true;
    this.options.clock.clearTimer(this.wake);
    this.options.clock.clearTimer(this.reconcile);
    while (this.running)
      await new Promise<void>(resolve => this.idle.push(resolve));
    const result = await this.options.firewall.apply(final);
    this.options.onApplied(result);
    return result;
  }
}
