import {Checker} from '../probe';
import type {CheckSpec} from '../probe';
import type {ProcessStarter} from '../spawn';
import type {LifeEvent} from './lifecycle';

/** The --check programs, run as the lifecycle says; each result, and each run's end, comes back as an event. */
export class CheckRuns {
  private readonly checkers = new Map<string, Checker>();

  constructor(specs: ReadonlyArray<CheckSpec>, timeoutMs: number, startProcess: ProcessStarter, private readonly dispatch: (event: LifeEvent) => void) {
    for (const spec of specs)
      this.checkers.set(spec.text, new Checker(spec, timeoutMs, startProcess));
  }

  run(text: string): void {
    const checker = this.checkers.get(text);
    if (checker === undefined)
      return;
    void checker.run().then(outcome => this.dispatch({type: 'check-result', text, outcome}));
    // A run killed at its deadline may outlive its result (stuck in the kernel): it is not started again until it is gone.
    void checker.gone().then(() => this.dispatch({type: 'check-exited', text}));
  }

  /** For the log: each check's process still there. */
  pids(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [text, checker] of this.checkers) {
      if (checker.busyPid !== undefined)
        out.set(text, checker.busyPid);
    }
    return out;
  }
}
