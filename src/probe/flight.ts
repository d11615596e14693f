import type {RunResult, Running} from '../spawn';

/**
 * One --check run at a time, never stacked: busy until the process has really
 * exited and been reaped. One killed at its deadline but stuck in the kernel
 * (D state ignores even SIGKILL) keeps it busy for as long as it is stuck.
 */
export class OneAtATime {
  private current: Running | null = null;

  get busy(): boolean {
    return this.current !== null;
  }

  get busyPid(): number | undefined {
    return this.current?.pid;
  }

  /** Settles once the child in flight (if any) has exited and been reaped. */
  gone(): Promise<void> {
    return this.current?.exited ?? Promise.resolve();
  }

  /** Its result at exit or at the deadline, and the milliseconds until then. */
  async run(start: () => Running): Promise<{result: RunResult, ms: number}> {
    if (this.current !== null)
      throw new Error('a child is already in flight');
    const started = performance.now();
    const running = start();
    this.current = running;
    void running.exited.then(() => {
      if (this.current === running)
        this.current = null;
    });
    const result = await running.result;
    return {result, ms: performance.now() - started};
  }
}
