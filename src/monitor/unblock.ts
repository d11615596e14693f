import os from 'node:os';

import {UnblockError} from '../errors';
import {encodeMessage} from '../heartbeat';
import type {Unblock} from '../heartbeat';
import {FAMILIES, TOOLS, directRunner, openWithoutMonitor, removeIptablesWithoutMonitor} from '../fencing';
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
  // Ask the monitor when there is one to answer; otherwise edit our own entries. Without a
  // monitor the snapshot is stale (the kernel may have fenced a reporter it calls healthy).
  const writer = new FifoWriter(options.fifo);
  const sent = writer.send(encodeMessage(message));
  writer.close();
  if (!sent.ok && (sent.reason === 'no-reader' || sent.reason === 'no-fifo'))
    return unblockWithoutMonitor(options, before, user);
  if (!sent.ok)
    throw new UnblockError(`could not ask the monitor: ${sent.detail}`);

  if (!known)
    throw new UnblockError(`unknown reporter ${options.name}: the monitor's snapshot has no such reporter (see ebsmon status)`);
  if (fencedNames(before, options.name).length === 0) {
    const state = before?.reporters.find(r => r.name === options.name)?.state;
    return [options.name === null ? 'no reporter is fenced: nothing changed' : `${label} is ${state ?? 'not fenced'}: not fenced, nothing changed`];
  }

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

/**
 * No monitor is reading the FIFO: edit ebsmon's own entries in whichever
 * backend holds them (a host may have both after a switch), nothing else.
 */
async function unblockWithoutMonitor(options: UnblockOptions, before: Snapshot | null, user: string): Promise<Array<string>> {
  const lines: Array<string> = [];
  const failures: Array<string> = [];
  const mine = before?.reporters.find(r => r.name === options.name);
  // This override is for one reporter: a port others guard too stays as the kernel holds it.
  const overridden = new Set((before?.reporters ?? []).filter(r => r.state === 'overridden').map(r => r.name));
  const backend = before?.monitor.firewall;

  const nft = await openWithoutMonitor(directRunner, options.name, mine?.ports ?? [], overridden);
  if ('failed' in nft) {
    // A host without nft (ENOENT) simply has no nftables fences, unless the monitor used it.
    if (backend === 'nftables' || (backend === undefined && !/ENOENT/.test(nft.failed)))
      failures.push(`nft: ${nft.failed}`);
  } else if (nft.tablePresent) {
    if (options.name === null)
      lines.push(`no monitor running: deleted table inet ebsmon, with every ebsmon fence and deadline (${nft.opened.length} port(s) were fenced)`);
    else if (nft.opened.length > 0)
      lines.push(`no monitor running: opened ${options.name}'s port(s) ${nft.opened.join(',')} in table inet ebsmon (no deadline until the next monitor re-arms them)`);
    if (nft.shared.length > 0)
      lines.push(`left port(s) ${nft.shared.join(',')} as the kernel holds them: other reporters guard them too, and with no monitor nothing has proven their disks (unblock those too, or start the monitor)`);
  }
  const openedHere = 'opened' in nft && nft.opened.length > 0;

  const iptables = await removeIptablesWithoutMonitor(directRunner, options.name);
  if (iptables.failures.length > 0 && backend !== 'nftables')
    failures.push(...iptables.failures.map(f => `${f.what}: ${f.detail}`));
  const tools = FAMILIES.map(f => TOOLS[f].cli).join(' and ');
  if (iptables.present && options.name === null)
    lines.push(`no monitor running: removed every ebsmon rule (${iptables.removed}), the jump and the EBSMON chain from ${tools}`);
  else if (iptables.removed > 0)
    lines.push(`no monitor running: removed ebsmon rules for ${options.name} from ${tools}`);

  if (failures.length > 0)
    throw new UnblockError(`no monitor running, and the firewall could not be changed: ${failures.join('; ')}`);
  if (lines.length === 0) {
    if (options.name !== null && mine === undefined)
      throw new UnblockError(`unknown reporter ${options.name}: no monitor running, no ebsmon entries and no snapshot entry for it`);
    lines.push(`no monitor running: ${options.name ?? 'no reporter'} had no fenced port in the firewall; nothing to remove`);
  }

  // So that the next monitor does not put the fence back.
  if (before !== null) {
    const now = Date.now();
    for (const reporter of before.reporters)
      if ((reporter.state === 'fenced' && options.name === null) || (reporter.name === options.name && (reporter.state === 'fenced' || openedHere))) {
        reporter.state = 'overridden';
        reporter.fencedSince = null;
        reporter.overriddenAt = now;
        reporter.overriddenBy = `${user} (pid ${process.pid}, no monitor running)`;
        reporter.reason = `unblock by ${reporter.overriddenBy}`;
      }
    writeSnapshot(options.stateDir, before);
  }
  return lines;
}
