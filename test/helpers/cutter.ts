// The socket cutter's test and bench rig: the driver that plays the monitor, and clients that wait.
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';

import {HELPER, Proc} from './proc';
import {ROOT, inNs, processState, registerChild, waitFor} from './rig';

export type Event = {ready?: {supported: boolean, detail: string | null, pid: number, helperPid: number, warnings: Array<string>}, failed?: string, cut?: {kind: string, port: number, sockets: number}, at?: string, error?: string, exit?: number | null, sent?: number};

export const nowNs = () => process.hrtime.bigint();
export const inMs = (ms: number) => nowNs() + BigInt(ms) * 1_000_000n;
export const ms = (ns: bigint) => Number(ns) / 1e6;

/** A process is gone once it has exited; a zombie waiting for its reaper counts as gone. */
export const gone = (pid: number) => {
  const state = processState(pid);
  return state === null || state === 'Z';
};

/** Every cutter the suite started: it outlives its driver, so the suite ends it by pid. */
export const cutters = new Set<number>();

/** The monitor's part, played by test/helpers/cutter-driver.ts in the server namespace. */
export class Driver {
  private commands = 0;

  constructor(readonly proc: Proc) {
  }

  static start(ns: string, spawnDir: string): Driver {
    const argv = inNs(ns, [process.execPath, '--import', 'tsx', HELPER('cutter-driver.ts'), spawnDir]);
    return new Driver(new Proc(spawn(argv[0]!, argv.slice(1), {cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe']})));
  }

  events(): Array<Event> {
    return this.proc.stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as Event);
  }

  async ready(): Promise<NonNullable<Event['ready']>> {
    const event = await waitFor('the cutter ready', () => this.events().find(e => e.ready !== undefined || e.failed !== undefined), 30_000);
    assert.equal(event.failed, undefined, `the cutter started: ${event.failed}`);
    registerChild(event.ready!.pid);
    cutters.add(event.ready!.pid);
    return event.ready!;
  }

  /** Sends one command and waits until the driver has written it to the cutter. */
  async send(command: Record<string, unknown>): Promise<void> {
    const n = ++this.commands;
    this.proc.child.stdin!.write(`${JSON.stringify(command)}\n`);
    await waitFor(`command ${n} written`, () => this.events().some(e => e.sent === n), 10_000);
  }

  arm(kind: 'in' | 'out', port: number, atNs: bigint): Promise<void> {
    return this.send({arm: kind, port, atNs: String(atNs)});
  }

  cut(kind: 'in' | 'out', port: number): Promise<NonNullable<Event['cut']>> {
    return waitFor(`cut ${kind} ${port}`, () => this.events().find(e => e.cut?.kind === kind && e.cut.port === port)?.cut, 20_000);
  }
}

/** Connections that send a query and wait; `ends()` are how they ended, with CLOCK_MONOTONIC times. */
export class Waiters {
  constructor(readonly proc: Proc, readonly count: number) {
  }

  /** `perPort` connections to each of `ports` ports from `port` on; `localAddress`: the address they connect from. */
  static start(ns: string, host: string, port: number, {ports = 1, perPort = 1, localAddress}: {ports?: number, perPort?: number, localAddress?: string} = {}): Waiters {
    const argv = inNs(ns, [process.execPath, HELPER('waiter.mjs'), host, String(port), String(ports), String(perPort), ...(localAddress === undefined ? [] : [localAddress])]);
    return new Waiters(new Proc(spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', 'pipe', 'pipe']})), ports * perPort);
  }

  connected(timeoutMs = 20_000): Promise<boolean> {
    return waitFor(`${this.count} connected`, () => this.proc.stdout.includes(`connected ${this.count}\n`), timeoutMs);
  }

  ends(): Array<{word: string, port: number, ns: bigint}> {
    // Whole lines only: the last piece may be a line still being written.
    return this.proc.stdout.split('\n').slice(0, -1).filter(line => !line.startsWith('connected')).map(line => {
      const [word, port, ns] = line.split(' ');
      return {word: word!, port: Number(port), ns: BigInt(ns!)};
    });
  }
}

