import fs from 'node:fs';
import path from 'node:path';
import * as t from 'typanion';

import {SnapshotError, errnoCode} from '../errors';
import {REJECT_REASONS, REJOIN_MODES} from '../heartbeat';
import {isNumberWhere} from '../heartbeat/lean';
import {isCount, isDeviceStats, isName, isNonNegative, isPathInfo, isPid, isPort, isUnwatched} from '../heartbeat/schema';

export const DEFAULT_STATE_DIR = '/run/ebsmon';
export const SNAPSHOT_FILE = 'state.json';
export const METRICS_FILE = 'metrics.prom';
export const SNAPSHOT_VERSION = 1;
/** The monitor writes at least once a second; older than this, it is not alive. */
export const PULSE_FRESH_SECONDS = 3;

export const REPORTER_STATES = ['healthy', 'fenced', 'overridden'] as const;
export const isReporterState = t.isEnum(REPORTER_STATES);
export type ReporterState = t.InferType<typeof isReporterState>;

/** Epoch milliseconds: the wire schema's non-negative number. */
const isEpochMs = isNonNegative;

/** Transitions kept per reporter; the oldest goes first. */
export const HISTORY_MAX = 20;

/** One change of a reporter's state, as the monitor carried it out. */
export const isHistoryEntry = t.isObject({
  at: isEpochMs,
  from: isReporterState,
  state: isReporterState,
  /** how long it had been `from`; null when the monitor did not see it begin */
  previousSeconds: t.isNullable(isNonNegative),
  reason: t.isString(),
});

/** Upper bounds (seconds) of the fence-duration histogram's buckets; +Inf is the count. */
export const FENCE_BUCKETS = [1, 5, 15, 30, 60, 300, 900, 3600, 21600, 86400] as const;

/** Fences that ended (recovered or lifted by hand): how long each lasted, as a histogram. */
export const isFenceDurations = t.isObject({
  count: isCount,
  sumSeconds: isNonNegative,
  lastSeconds: isNonNegative,
  /** per bucket of FENCE_BUCKETS, fences at most that long (not cumulative) */
  buckets: t.isArray(isCount),
});

/** A reporter's pid; 0 for one adopted from the kernel's entries that has not heartbeated since (no goodbye can match it). */
const isReporterPid = isNumberWhere('a pid, or 0 before its first heartbeat', n => Number.isInteger(n) && n >= 0);

export const isReporterSnapshot = t.isObject({
  name: isName,
  pid: isReporterPid,
  ports: t.isArray(isPort),
  state: isReporterState,
  lastHeartbeatAt: t.isNullable(isEpochMs),
  fencedSince: t.isNullable(isEpochMs),
  overriddenAt: t.isNullable(isEpochMs),
  overriddenBy: t.isNullable(t.isString()),
  /** When the kernel (nftables) or the monitor fences it if no heartbeat comes: epoch ms, null unless healthy. */
  deadlineAt: t.isOptional(t.isNullable(isEpochMs)),
  fenceCount: isCount,
  flapCount: isCount,
  heartbeats: isCount,
  lastProbeMs: t.isNullable(t.isNumber()),
  interval: t.isNullable(t.isNumber()),
  probeTimeout: t.isNullable(t.isNumber()),
  /** The reporter's watched paths and their pinned devices (reporters that send them). */
  paths: t.isOptional(t.isArray(isPathInfo)),
  /** Volumes the reporter's service writes to that it does not watch, from its last heartbeat (discovery). */
  unwatched: t.isOptional(t.isArray(isUnwatched)),
  reason: t.isString(),
  /** When it entered its current state: epoch ms (null: before this monitor's records). */
  stateSince: t.isOptional(t.isNullable(isEpochMs)),
  /** The last HISTORY_MAX transitions, oldest first. */
  history: t.isOptional(t.isArray(isHistoryEntry)),
  fenceDurations: t.isOptional(isFenceDurations),
  /** What the reporter said it failed on since its last heartbeat (its "failing" message). */
  failure: t.isOptional(t.isObject({reason: t.isString(), at: isEpochMs})),
  /** Its devices' counters as the reporter last sent them, and when. */
  devices: t.isOptional(t.isArray(isDeviceStats)),
  devicesAt: t.isOptional(isEpochMs),
  /** Destination ports its host must not reach while it is fenced. */
  isolate: t.isOptional(t.isArray(isPort)),
  /**
   * Its rejoin condition; for a fenced reporter, where it stands: its voice
   * given back or not (`stage`), and what it waits for: its disks (heartbeats
   * to --recover), an operator (manual), or its rejoin program (with the
   * program's last words).
   */
  rejoin: t.isOptional(t.isObject({
    mode: t.isEnum(REJOIN_MODES),
    stage: t.isOptional(t.isEnum(['fenced', 'voice'] as const)),
    waiting: t.isOptional(t.isEnum(['disks', 'operator', 'program'] as const)),
    reason: t.isOptional(t.isString()),
  })),
});

export const isSnapshot = t.isObject({
  v: t.isLiteral(SNAPSHOT_VERSION),
  monitor: t.isObject({
    pid: isPid,
    startedAt: isEpochMs,
    writtenAt: isEpochMs,
    timeout: t.isNumber(),
    recover: isCount,
    protectPorts: t.isArray(isPort),
    heartbeats: isCount,
    linesRejected: t.isRecord(isCount),
    firewallOk: t.isBoolean(),
    /** The backend in use; older monitors wrote none (iptables). */
    firewall: t.isOptional(t.isEnum(['nftables', 'iptables'] as const)),
    /** True when the kernel holds the deadlines (nftables): fences land even while the monitor cannot run. */
    deadlinesInKernel: t.isOptional(t.isBoolean()),
    /**
     * The socket cutter, which cuts clients already waiting on a fenced port:
     * ok (running), unsupported (the kernel refuses SOCK_DESTROY), none (not
     * running: ss -K is tried instead). Older monitors wrote none.
     */
    socketCutter: t.isOptional(t.isObject({state: t.isEnum(['ok', 'unsupported', 'none'] as const), pid: t.isOptional(t.isNumber()), detail: t.isOptional(t.isString())})),
  }),
  reporters: t.isArray(isReporterSnapshot),
});

export type ReporterSnapshot = t.InferType<typeof isReporterSnapshot>;
export type HistoryEntry = t.InferType<typeof isHistoryEntry>;
export type FenceDurations = t.InferType<typeof isFenceDurations>;
export type Snapshot = t.InferType<typeof isSnapshot>;

export function emptyRejections(): Record<string, number> {
  return Object.fromEntries(REJECT_REASONS.map(reason => [reason, 0]));
}

/** tmp + rename: a reader sees the old file or the new one, never half of one. */
export function writeAtomic(file: string, content: string, mode = 0o644): void {
  writeAtomicChunks(file, write => write(content), mode);
}

const CHUNK = 32 * 1024;

/**
 * The same, for content produced in pieces (a snapshot of 1000 reporters is
 * 400 KB, rewritten every second). Pieces go out in chunks of 32 KB: a string
 * of the whole file would be allocated in V8's large-object space, which only
 * a full collection frees, and the heap would grow by a megabyte a second.
 */
export function writeAtomicChunks(file: string, produce: (write: (text: string) => void) => void, mode = 0o644): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    let pending = '';
    produce(text => {
      pending += text;
      if (pending.length >= CHUNK) {
        fs.writeSync(fd, pending);
        pending = '';
      }
    });
    if (pending.length > 0)
      fs.writeSync(fd, pending);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Copies a file to `file` off the event loop, atomically, one copy at a time (a copy asked for while one is in flight is skipped). */
export function copyAtomicAsync(file: string): (from: string) => void {
  let busy = false;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  return from => {
    if (busy)
      return;
    busy = true;
    fs.copyFile(from, tmp, error => {
      if (error !== null) {
        busy = false;
        return;
      }
      fs.rename(tmp, file, () => {
        busy = false;
      });
    });
  };
}

export function snapshotPath(stateDir: string): string {
  return path.join(stateDir, SNAPSHOT_FILE);
}

export function writeSnapshot(stateDir: string, snapshot: Snapshot): void {
  writeAtomicChunks(snapshotPath(stateDir), write => {
    write(`{"v":${JSON.stringify(snapshot.v)},"monitor":${JSON.stringify(snapshot.monitor)},"reporters":[`);
    // A hundred reporters to a piece: few calls, and each string well below V8's large-object size.
    for (let i = 0; i < snapshot.reporters.length; i += 100)
      write(`${i === 0 ? '' : ','}${JSON.stringify(snapshot.reporters.slice(i, i + 100)).slice(1, -1)}`);
    write(']}\n');
  });
}

/** null when there is no snapshot; SnapshotError when there is one that cannot be trusted. */
export function readSnapshot(stateDir: string): Snapshot | null {
  const file = snapshotPath(stateDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT')
      return null;
    throw new SnapshotError(`cannot read ${file}: ${String((error as Error).message)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new SnapshotError(`${file} is not valid JSON (corrupt, or not written by ebsmon)`);
  }
  const errors: Array<string> = [];
  if (!isSnapshot(value, {errors}))
    throw new SnapshotError(`${file} is not an ebsmon snapshot: ${errors.slice(0, 3).join('; ')}`);
  return value;
}
