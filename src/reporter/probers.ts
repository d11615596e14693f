import fs from 'node:fs';

import {Prober} from '../probe';
import type {DeviceSample, DeviceWatch, ProbeMethod, ProbeOutcome, ProbeTarget, StreamStarter} from '../probe';
import {describeProbe} from './findings';
import type {DeviceWindow, Finding} from './findings';
import type {LifeEvent, MountProblem} from './lifecycle';

/** One prober process of a path, as started on the lifecycle's word. */
type Slot = {
  id: number;
  prober: Prober;
  /** the device's counters when the request in flight started: the probe's window opens there */
  startSample: DeviceSample | null;
  /** its request timed out: said again each tick while the process is stuck */
  timedOut: (ProbeOutcome & {ok: false}) | null;
  gone: boolean;
};

export type ProberDeps = {
  targets: ReadonlyMap<string, ProbeTarget>;
  devices: ReadonlyMap<string, DeviceWatch>;
  timeoutMs: number;
  startStream: StreamStarter;
  scriptFile: string;
  /** the path's mount checked again (procfs): a probe may have run against a mount that is gone */
  mountProblem: (path: string) => MountProblem | undefined;
  dispatch: (event: LifeEvent) => void;
};

/** procfs: the kernel's name of a process's program, set when its exec succeeds; null once it is gone. */
function commOf(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

/**
 * The resident probers, one per watched path, started, asked, abandoned and
 * closed as the lifecycle says; their answers come back as events, a failure
 * already in words with what its device did meanwhile.
 */
export class PathProbers {
  private readonly slots = new Map<string, Array<Slot>>();
  /** The inode of each path's probe file, carried over to a replacement prober. */
  private readonly inodes = new Map<string, string>();

  constructor(private readonly deps: ProberDeps) {
  }

  private slot(path: string, id: number): Slot | undefined {
    return this.slots.get(path)?.find(s => s.id === id);
  }

  start(path: string, id: number): void {
    const target = this.deps.targets.get(path);
    if (target === undefined)
      throw new Error(`no target for ${path}`);
    const prober = new Prober(target, this.deps.timeoutMs, this.deps.startStream, this.deps.scriptFile, {fileInode: this.inodes.get(path) ?? '0'});
    const slot: Slot = {id, prober, startSample: null, timedOut: null, gone: false};
    this.slots.set(path, [...(this.slots.get(path) ?? []), slot]);
    prober.start(code => {
      slot.gone = true;
      this.slots.set(path, (this.slots.get(path) ?? []).filter(s => s !== slot));
      this.deps.dispatch({type: 'prober-exited', path, prober: id, code});
    });
  }

  probe(path: string, id: number, seq: number, method: ProbeMethod): void {
    const slot = this.slot(path, id);
    if (slot === undefined)
      return;
    // Requests go out on a tick, right after its sample: the probe's window opens there.
    slot.startSample = this.deps.devices.get(path)?.current() ?? null;
    void slot.prober.probe(seq, method).then(outcome => {
      this.inodes.set(path, slot.prober.fileInode);
      // The table is read again when the prober saw it change, and for a failure's reason (a mount gone explains it).
      const mount = outcome.mountsChanged === true || !outcome.ok ? this.deps.mountProblem(path) : undefined;
      const facts = mount === undefined ? {} : {mount};
      if (outcome.ok) {
        this.deps.dispatch({type: 'probe-result', path, prober: id, outcome, ...facts});
        return;
      }
      if (outcome.code === 'ETIMEDOUT')
        slot.timedOut = outcome;
      const {outcome: said, finding} = this.describe(path, slot, outcome);
      this.deps.dispatch({type: 'probe-result', path, prober: id, outcome: said, finding, ...facts});
    });
  }

  /**
   * Missed its deadline (or never ran): killed with its group, never asked
   * again. It stays listed until it has exited; one stuck in the kernel, until
   * its I/O ends. A path no longer watched closes its prober the same way.
   */
  abandon(path: string, id: number): void {
    this.slot(path, id)?.prober.abandon();
  }

  /** Every abandoned prober still there: its timeout in words again, with this tick's counters. */
  restated(): Map<string, Finding> {
    const out = new Map<string, Finding>();
    for (const [path, slots] of this.slots) {
      const stuck = slots.find(s => s.timedOut !== null && !s.gone);
      if (stuck !== undefined)
        out.set(path, this.describe(path, stuck, stuck.timedOut!).finding);
    }
    return out;
  }

  /** For the log: each path's prober process. */
  pids(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [path, slots] of this.slots) {
      const pid = slots.at(-1)?.prober.pid;
      if (pid !== undefined)
        out.set(path, pid);
    }
    return out;
  }

  /** A failing answer in words, with what its device did from the probe's start until now. */
  private describe(path: string, slot: Slot, outcome: ProbeOutcome & {ok: false}): {outcome: ProbeOutcome & {ok: false}, finding: Finding} {
    // Still not perl: its exec is stuck, on the disk that holds perl (the root disk, on AWS), not on the watched one.
    const pid = slot.prober.pid;
    const comm = outcome.code === 'ETIMEDOUT' && pid !== undefined ? commOf(pid) : null;
    if (comm !== null && comm !== 'perl') {
      const stuck = {...outcome, code: 'ENOSTART', reason: `${outcome.reason} before perl started (its exec is stuck: does the disk holding perl, often the root disk, answer?)`};
      return {outcome: stuck, finding: describeProbe(path, stuck, null)};
    }
    const device = this.deps.devices.get(path);
    let window: DeviceWindow | null = null;
    if (device !== undefined && slot.startSample !== null) {
      const now = device.sample();
      // A timeout is judged over the probe's own life; an error over the last few seconds (the error took a millisecond).
      const from = outcome.code === 'ETIMEDOUT' ? slot.startSample : device.lookback() ?? slot.startSample;
      if (now !== null)
        window = {name: device.node.name, from, to: now, progressAt: device.quietSince()};
    }
    return {outcome, finding: describeProbe(path, outcome, window)};
  }
}
