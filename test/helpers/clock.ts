import type {Clock} from '../../src/monitor';

/** A clock the test moves by hand; timers run in order as it passes them. */
export class FakeClock implements Clock {
  time = 0;
  private readonly timers = new Map<number, {at: number, fn: () => void}>();
  private next = 1;
  mono = () => this.time;
  wall = () => 1_700_000_000_000 + this.time;
  setTimer = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.timers.set(id, {at: this.time + ms, fn});
    return id;
  };
  clearTimer = (id: unknown) => {
    this.timers.delete(id as number);
  };
  get pending(): number {
    return this.timers.size;
  }
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
      if (due === undefined)
        break;
      this.timers.delete(due[0]);
      this.time = Math.max(this.time, due[1].at);
      due[1].fn();
    }
    this.time = end;
  }
}
