import {after, before} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import type {Proc} from './proc';
import {Teardown} from './rig';

export type Scratch = {
  /** The suite's own temporary directory. */
  dir: string;
  teardown: Teardown;
  /** Started by the suite: ended (continued first, if stopped) when it ends. */
  track: (proc: Proc) => Proc;
  /** Runs first when the suite ends, before any process is stopped: thaw, resume. */
  first: (undo: () => void) => void;
};

/**
 * A describe() block's scratch space: a temporary directory, a Teardown with
 * its crash watchdog, and the processes it started, all undone after the
 * suite in the one safe order (thaw and resume, stop processes, tear down).
 */
export function useScratch(setup: (scratch: Scratch) => Promise<void> | void = () => {}): Scratch {
  const procs: Array<Proc> = [];
  const undos: Array<() => void> = [];
  let cleanup: () => Promise<void> = async () => {};
  const scratch: Scratch = {
    dir: '',
    teardown: undefined as unknown as Teardown,
    track: proc => {
      procs.push(proc);
      return proc;
    },
    first: undo => {
      undos.push(undo);
    },
  };
  before(async () => {
    ({path: scratch.dir, cleanup} = await tmpDir({unsafeCleanup: true}));
    scratch.teardown = new Teardown(scratch.dir);
    await setup(scratch);
  });
  after(async () => {
    for (const undo of undos)
      undo();
    for (const proc of procs.reverse()) {
      proc.kill('SIGCONT');
      await proc.stop();
    }
    scratch.teardown?.dispose();
    await cleanup();
  });
  return scratch;
}
