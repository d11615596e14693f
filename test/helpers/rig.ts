import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type {TestContext} from 'node:test';

export const isRoot = process.getuid?.() === 0;
export const inCI = (process.env.CI ?? '') !== '';
export const ROOT = path.resolve(__dirname, '..', '..');
export const EBSMON = path.join(ROOT, 'dist', 'ebsmon');

/** Root-only tests skip on a laptop, never in CI. */
export function requireRoot(t: TestContext): boolean {
  if (isRoot)
    return true;
  if (inCI)
    throw new Error('CI must run as root: this test needs namespaces, loop devices and iptables');
  t.skip('needs root');
  return false;
}

export function sh(argv: Array<string>, {input, allowFail = false}: {input?: string, allowFail?: boolean} = {}): string {
  const [file, ...args] = argv;
  const result = spawnSync(file!, args, {encoding: 'utf8', input, timeout: 60_000});
  if (!allowFail && result.status !== 0)
    throw new Error(`${argv.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr}${result.error?.message ?? ''}`);
  return result.stdout ?? '';
}

/** Polls a condition; the deadline is a safety net, not a measured threshold. */
export async function waitFor<T>(what: string, probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false)
      return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, everyMs));
  }
}

/**
 * Undo steps, run in reverse by dispose() or, if this test process dies, by a
 * detached watchdog that thaws and tears down (a frozen mount left behind
 * hangs the next run and CI).
 */
const activeTeardowns = new Set<Teardown>();

/** Every process a test starts: ended by pid if the test process dies (it may hold the mount). */
export function registerChild(pid: number | undefined): void {
  for (const teardown of activeTeardowns)
    teardown.killOnCrash(pid);
}

export class Teardown {
  private readonly steps: Array<Array<string>> = [];
  private readonly script: string;
  private watchdog: number | undefined;

  constructor(readonly dir: string) {
    this.script = path.join(dir, 'teardown.sh');
    this.write();
    const child = spawn('bash', ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 0.5; done; bash "${this.script}"`], {detached: true, stdio: 'ignore'});
    child.unref();
    this.watchdog = child.pid;
    activeTeardowns.add(this);
  }

  add(argv: Array<string>): void {
    this.steps.push(argv);
    this.write();
  }

  /** Only if this test process dies: end a process it started, by pid (first, so a mount can go). */
  killOnCrash(pid: number | undefined): void {
    if (pid !== undefined) {
      this.crashKills.push(pid);
      this.write();
    }
  }

  private readonly crashKills: Array<number> = [];

  private write(): void {
    const word = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const quote = (argv: Array<string>) => `${argv.map(word).join(' ')} >/dev/null 2>&1`;
    const lines = ['#!/bin/bash', ...this.crashKills.map(pid => quote(['kill', '-9', String(pid)])), ...[...this.steps].reverse().map(quote),
      // Last, the test's own temporary directory, unless something is still mounted inside it.
      `grep -qF ${word(` ${this.dir}/`)} /proc/mounts || rm -rf ${word(this.dir)}`];
    fs.writeFileSync(this.script, `${lines.join('\n')}\n`);
  }

  dispose(): void {
    activeTeardowns.delete(this);
    if (this.watchdog !== undefined) {
      try {
        process.kill(this.watchdog, 'SIGKILL');
      } catch {}
      this.watchdog = undefined;
    }
    for (const argv of [...this.steps].reverse())
      sh(argv, {allowFail: true});
    this.steps.length = 0;
    this.write();
  }
}

/** A loop-mounted ext4 image this test made: the only kind of mount a test may freeze. */
export class LoopVolume {
  frozen = false;

  private constructor(readonly image: string, readonly device: string, readonly mountpoint: string) {
  }

  /**
   * directIo: the loop device bypasses the page cache of its backing file, so an fsync reaches the real disk.
   * name: several volumes in one directory (image NAME.img, mounted at NAME).
   */
  static create(dir: string, teardown: Teardown, sizeMb = 64, {directIo = false, name}: {directIo?: boolean, name?: string} = {}): LoopVolume {
    const image = path.join(dir, name === undefined ? 'volume.img' : `${name}.img`);
    const mountpoint = path.join(dir, name ?? 'mnt');
    fs.mkdirSync(mountpoint, {recursive: true});
    sh(['truncate', '-s', `${sizeMb}M`, image]);
    sh(['mkfs.ext4', '-q', '-F', image]);
    const device = sh(['losetup', '-f', '--show', ...(directIo ? ['--direct-io=on'] : []), image]).trim();
    teardown.add(['losetup', '-d', device]);
    sh(['mount', device, mountpoint]);
    teardown.add(['umount', '-l', mountpoint]);
    // A plain umount first so the loop device is free to detach; -l if something still holds it.
    teardown.add(['umount', mountpoint]);
    // Registered last so it runs first: a frozen mount cannot be unmounted.
    teardown.add(['fsfreeze', '-u', mountpoint]);
    return new LoopVolume(image, device, mountpoint);
  }

  freeze(): void {
    sh(['fsfreeze', '-f', this.mountpoint]);
    this.frozen = true;
  }

  thaw(): void {
    if (this.frozen)
      sh(['fsfreeze', '-u', this.mountpoint], {allowFail: true});
    this.frozen = false;
  }

  remount(mode: 'ro' | 'rw'): void {
    sh(['mount', '-o', `remount,${mode}`, this.mountpoint]);
  }
}

export type NetRig = {
  srv: string;
  cli: string;
  srvV4: string;
  srvV6: string;
  cliV4: string;
};

let rigCounter = 0;

/** Two namespaces joined by a veth pair, IPv4 and IPv6; firewall changes stay inside them. */
export function createNetRig(teardown: Teardown): NetRig {
  rigCounter += 1;
  const tag = `${process.pid}-${rigCounter}`;
  const rig: NetRig = {srv: `ebsmon-srv-${tag}`, cli: `ebsmon-cli-${tag}`, srvV4: '10.213.0.1', srvV6: 'fd00:e65::1', cliV4: '10.213.0.2'};
  for (const ns of [rig.srv, rig.cli]) {
    sh(['ip', 'netns', 'add', ns]);
    teardown.add(['ip', 'netns', 'del', ns]);
    sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  const vs = `vs${rigCounter}x${process.pid % 10000}`;
  const vc = `vc${rigCounter}x${process.pid % 10000}`;
  sh(['ip', 'link', 'add', vs, 'netns', rig.srv, 'type', 'veth', 'peer', 'name', vc, 'netns', rig.cli]);
  sh(['ip', '-n', rig.srv, 'addr', 'add', `${rig.srvV4}/24`, 'dev', vs]);
  sh(['ip', '-n', rig.cli, 'addr', 'add', `${rig.cliV4}/24`, 'dev', vc]);
  sh(['ip', '-n', rig.srv, 'addr', 'add', `${rig.srvV6}/64`, 'dev', vs, 'nodad']);
  sh(['ip', '-n', rig.cli, 'addr', 'add', 'fd00:e65::2/64', 'dev', vc, 'nodad']);
  sh(['ip', '-n', rig.srv, 'link', 'set', vs, 'up']);
  sh(['ip', '-n', rig.cli, 'link', 'set', vc, 'up']);
  return rig;
}

export function inNs(ns: string, argv: Array<string>): Array<string> {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** Whether a process with this pid exists (kill -0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The state letter of a process (R, S, D, T, Z...), or null when there is none. */
export function processState(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] ?? null;
  } catch {
    return null;
  }
}

/** Every process below `pid`, from /proc: the children a test may signal are the ones it started. */
export function descendants(pid: number): Array<number> {
  const children = new Map<number, Array<number>>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry))
      continue;
    try {
      const ppid = Number(fs.readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone while we looked.
    }
  }
  const out: Array<number> = [];
  const walk = (parent: number) => {
    for (const child of children.get(parent) ?? []) {
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
}
