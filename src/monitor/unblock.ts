import os from 'node:os';

import {UnblockError} from '../errors';
import {encodeMessage} from '../heartbeat';
import type {Unblock} from '../heartbeat';
import {FAMILIES, TOOLS, removeWithoutMonitor} from '../fencing';
import {readSnapshot, writeSnapshot} from '../state';
import type {Snapshot} from '../state';
import {FifoWriter} from '../transport';

export type UnblockOptions = {
  /** null: every reporter (--all) */
  name: string | null;
  fifo: string;
  stateDir: string;
  /** seconds */
  wait: number;
};

const POLL_MS = 50;

function requester(): string {
  try {
    return os.userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

function fencedNames(snapshot: Snapshot | null, name: string | null): Array<string> {
  return (snapshot?.reporters ?? []).filter(r => r.state === 'fenced' && (name === null || r.name === name)).map(r => r.name);
}

function readQuietly(stateDir: string): Snapshot | null {
  try {
    return readSnapshot(stateDir);
  } catch {
    return null;
  }
}

/** Lifts a fence through the monitor, or by itself when no monitor is reading. Returns lines to print. */
export async function unblock(options: UnblockOptions): Promise<Array<string>> {
  const label = options.name ?? 'all reporters';
  const before = readQuietly(options.stateDir);
  const known = options.name === null || (before?.reporters.some(r => r.name === options.name) ?? false);

  const user = requester();
  const message: Unblock = options.name === null
    ? {v: 1, kind: 'unblock', all: true, pid: process.pid, user}
    : {v: 1, kind: 'unblock', name: options.name, pid: process.pid, user};
  // Only ask the monitor when there is one to answer; otherwise edit our own rules.
  if (before !== null && known && fencedNames(before, options.name).length === 0 && options.name !== null) {
    const state = before.reporters.find(r => r.name === options.name)?.state;
    return [`${options.name} is ${state}: not fenced, nothing changed`];
  }

  const writer = new FifoWriter(options.fifo);
  const sent = writer.send(encodeMessage(message));
  writer.close();
  if (!sent.ok && (sent.reason === 'no-reader' || sent.reason === 'no-fifo'))
    return unblockWithoutMonitor(options, before, user);
  if (!sent.ok)
    throw new UnblockError(`could not ask the monitor: ${sent.detail}`);

  if (!known)
    throw new UnblockError(`unknown reporter ${options.name}: the monitor's snapshot has no such reporter (see ebsmon status)`);
  if (fencedNames(before, options.name).length === 0)
    return [options.name === null ? 'no reporter is fenced: nothing changed' : `${label} is not fenced: nothing changed`];

  const deadline = performance.now() + options.wait * 1000;
  for (;;) {
    const now = readQuietly(options.stateDir);
    const stillFenced = fencedNames(now, options.name);
    if (now !== null && stillFenced.length === 0) {
      const lifted = fencedNames(before, options.name);
      return lifted.map(name => `${name}: fence lifted; overridden until its next heartbeat`);
    }
    if (performance.now() >= deadline)
      throw new UnblockError(`the monitor has not lifted the fence of ${stillFenced.join(', ') || label} within ${options.wait} s (still fenced in its snapshot); see its log`);
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
  }
}

async function unblockWithoutMonitor(options: UnblockOptions, before: Snapshot | null, user: string): Promise<Array<string>> {
  const {removed, failures} = await removeWithoutMonitor(options.name);
  if (failures.length > 0)
    throw new UnblockError(`no monitor running, and the firewall could not be changed: ${failures.map(f => `${f.what}: ${f.detail}`).join('; ')}`);
  const total = [...removed.values()].reduce((a, b) => a + b, 0);
  const inSnapshot = options.name === null || (before?.reporters.some(r => r.name === options.name) ?? false);
  if (total === 0 && !inSnapshot)
    throw new UnblockError(`unknown reporter ${options.name}: no monitor running, no ebsmon rules and no snapshot entry for it`);

  // So that the next monitor does not put the fence back.
  if (before !== null) {
    const now = Date.now();
    for (const reporter of before.reporters)
      if (reporter.state === 'fenced' && (options.name === null || reporter.name === options.name)) {
        reporter.state = 'overridden';
        reporter.fencedSince = null;
        reporter.overriddenAt = now;
        reporter.overriddenBy = `${user} (pid ${process.pid}, no monitor running)`;
        reporter.reason = `unblock by ${reporter.overriddenBy}`;
      }
    writeSnapshot(options.stateDir, before);
  }

  const tools = FAMILIES.map(f => TOOLS[f].cli).join(' and ');
  if (options.name === null)
    return [`no monitor running: removed every ebsmon rule (${total}), the jump and the EBSMON chain from ${tools}`];
  return [total === 0
    ? `no monitor running: ${options.name} had no ebsmon rules in ${tools}; nothing to remove`
    : `no monitor running: removed ebsmon rules for ${options.name} from ${tools}`];
}
