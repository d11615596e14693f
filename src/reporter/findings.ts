import {diagnose, windowOf} from '../probe';
import type {CheckOutcome, DeviceSample, FileEvent, ProbeOutcome} from '../probe';

/** One failing probe or check, in words: `key` changes only when what is wrong changes (not its numbers). */
export type Finding = {head: string, evidence: string | null, key: string};

/** The device answered, with an error: its counters say whether it still completes anything. */
const DEVICE_ERRORS = new Set(['EIO', 'ENXIO', 'ENODEV', 'EMISMATCH', 'ESHORT']);
const MOUNT_PROBLEMS = new Set(['EMOUNTGONE', 'EMOUNTREPLACED', 'EMOUNTTABLE']);
const FULL = new Set(['ENOSPC', 'EDQUOT']);

/** A device between the probe's start and now. */
export type DeviceWindow = {name: string, from: DeviceSample, to: DeviceSample, progressAt: number};

export function describeProbe(path: string, outcome: ProbeOutcome & {ok: false}, device: DeviceWindow | null): Finding {
  let head: string;
  if (outcome.code === 'ETIMEDOUT' || outcome.code === 'ENOSTART')
    head = `probe of ${path} ${outcome.reason}`;
  else if (MOUNT_PROBLEMS.has(outcome.code))
    head = `probe of ${path}: ${outcome.reason}`;
  else
    head = `probe of ${path} failed: ${outcome.reason}`;
  // Only when the probe had to allocate (its file was new): a file with its block is rewritten in place on a full volume.
  if (FULL.has(outcome.code))
    head += ' (the volume is full and the probe file has no block of its own yet; free some space)';
  const kind = outcome.code === 'ETIMEDOUT' ? 'timeout' : DEVICE_ERRORS.has(outcome.code) ? 'error' : null;
  if (device === null || kind === null)
    return {head, evidence: null, key: `${head}|${outcome.code}`};
  const judged = diagnose(windowOf(device.name, device.from, device.to, device.progressAt), kind);
  return {head, evidence: judged.text, key: `${head}|${judged.diagnosis}`};
}

export function describeCheck(text: string, outcome: CheckOutcome & {ok: false}): Finding {
  return {head: outcome.reason, evidence: null, key: `check ${text}|${outcome.status}`};
}

export function composeReason(findings: ReadonlyArray<Finding>): string {
  return findings.map(f => (f.evidence === null ? f.head : `${f.head}; ${f.evidence}`)).join('; ');
}

/** What the prober found at the probe name and did about it, as the log says it. */
export function describeFileEvent(file: string, event: FileEvent): {level: 'error' | 'warn' | 'info', message: string} {
  switch (event.kind) {
    case 'found':
      return {level: 'error', message: `${file}: found a ${event.what} (owner uid ${event.uid}, ${event.links} link${event.links === 1 ? '' : 's'}, inode ${event.inode}) that this reporter did not create; removed it without following it${event.what === 'symlink' ? ' (its target is untouched)' : ''} and created a file of its own`};
    case 'stale':
      return {level: 'info', message: `${file}: removed the probe file of an earlier run and created a new one`};
    case 'missing':
      return {level: 'warn', message: `${file}: the probe file this reporter created was removed by someone else; created a new one`};
    case 'moved':
      return {level: 'error', message: `${file}: a directory that is not empty was at the probe name; renamed it to ${event.to} (never entered as root)`};
  }
}
