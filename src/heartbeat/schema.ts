import * as t from 'typanion';

import {isBoundedArray, isDistinctArray, isExactObject, isNumberWhere, isStringWhere} from './lean';

export const PROTOCOL_VERSION = 1;
/** Largest line, newline included: a write of at most PIPE_BUF bytes to a FIFO is atomic (pipe(7)). */
export const MAX_LINE_BYTES = 4096;
export const MAX_PORTS = 64;
/** Watched paths per reporter; with the field limits below a heartbeat of printable ASCII stays within MAX_LINE_BYTES. */
export const MAX_PATHS = 8;
export const PATH_FIELD_MAX = {path: 120, mountPoint: 120, source: 80, fstype: 24} as const;

export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

// The hot fields of every heartbeat use the lean validators (see lean.ts).
export const isName = isStringWhere('1-64 characters of A-Z a-z 0-9 . _ -', text => NAME_PATTERN.test(text));
export const isPort = isNumberWhere('a port, an integer from 1 to 65535', n => Number.isInteger(n) && n >= 1 && n <= 65535);
export const isPortList = isDistinctArray(isPort, {min: 1, max: MAX_PORTS});
export const isPid = isNumberWhere('a pid, an integer of at least 1', n => Number.isInteger(n) && n >= 1);
/** Durations are seconds; zero or negative would make a deadline meaningless. */
export const isSeconds = isNumberWhere('seconds, from 0.001 to 86400', n => n >= 0.001 && n <= 86400);
export const isCount = isNumberWhere('an integer of at least 0', n => Number.isInteger(n) && n >= 0);
export const isNonNegative = isNumberWhere('a number of at least 0', n => n >= 0);

const isText = (max: number) => isStringWhere(`a string of 1 to ${max} characters`, text => text.length >= 1 && text.length <= max);

/** A watched path and the device it was pinned to at the reporter's start-up. */
export const isPathInfo = isExactObject({
  path: isText(PATH_FIELD_MAX.path),
  device: isStringWhere('a device as major:minor', text => /^\d{1,10}:\d{1,10}$/.test(text)),
  source: isText(PATH_FIELD_MAX.source),
  fstype: isText(PATH_FIELD_MAX.fstype),
  mountPoint: isText(PATH_FIELD_MAX.mountPoint),
});

/**
 * A filesystem the reporter's service holds a file open for writing on that
 * no watched path is on (discovery), with the file that proves it. A
 * heartbeat carries at most MAX_UNWATCHED; the reporter's log names all.
 */
export const MAX_UNWATCHED = 2;
export const UNWATCHED_FIELD_MAX = {file: 120, source: 80} as const;
export const isUnwatched = isExactObject({
  file: isText(UNWATCHED_FIELD_MAX.file),
  device: isStringWhere('a device as major:minor', text => /^\d{1,10}:\d{1,10}$/.test(text)),
  source: isText(UNWATCHED_FIELD_MAX.source),
});

/** A kernel block device name as sysfs spells it (DISK_NAME_LEN is 32; "!" stands for "/"). */
export const DEVICE_NAME_MAX = 32;
/** The longest failure reason a reporter sends; a check's output can make it long, and a line must stay within MAX_LINE_BYTES. */
export const REASON_MAX = 2048;

/**
 * What a watched path's block device was doing in the reporter's last
 * window, from its sysfs counters (stat and inflight), never from the device.
 */
export const isDeviceStats = isExactObject({
  /** major:minor of the node read (a partition's own, a loop or dm device's) */
  device: isStringWhere('a device as major:minor', text => /^\d{1,10}:\d{1,10}$/.test(text)),
  name: isStringWhere(`a device name of 1 to ${DEVICE_NAME_MAX} characters`, text => text.length >= 1 && text.length <= DEVICE_NAME_MAX),
  /** requests in flight when sampled */
  inflight: isCount,
  /** I/Os completed since the device appeared (reads, writes, discards, flushes) */
  ios: isCount,
  /** the window, milliseconds */
  windowMs: isNonNegative,
  /** I/Os completed in the window */
  done: isCount,
  /** milliseconds of the window the device had I/O in flight (io_ticks) */
  busyMs: isNonNegative,
  /** average milliseconds per I/O completed in the window; absent when none completed */
  awaitMs: t.isOptional(isNonNegative),
  /** milliseconds since the completion count last moved */
  quietMs: isNonNegative,
});

const isDeviceList = isBoundedArray(isDeviceStats, {min: 1, max: MAX_PATHS});

/** Destination ports a reporter's host must stop reaching while it is fenced. */
export const MAX_ISOLATE = 16;
/** The longest rejoin program output a heartbeat carries. */
export const REJOIN_REASON_MAX = 512;

export const REJOIN_MODES = ['auto', 'manual', 'program'] as const;
/**
 * What a rejoin program last answered: `clients` (take clients again: exit
 * 0), `voice` (reach the coordinator again, not clients yet: exit 10), or
 * `none` (not yet).
 */
export const REJOIN_ANSWERS = ['none', 'voice', 'clients'] as const;

/**
 * When a fenced reporter may take clients again, once its disks are proven:
 * `auto` after --recover heartbeats, `manual` only by unblock, `program` when
 * the reporter's rejoin program says so, in stages. `answer`, `startedAt`
 * (epoch ms: when the run that gave it started) and `reason` (its output)
 * come with `program` once it has run.
 */
export const isRejoin = isExactObject({
  mode: isStringWhere('auto, manual or program', text => (REJOIN_MODES as ReadonlyArray<string>).includes(text)) as t.StrictValidator<unknown, typeof REJOIN_MODES[number]>,
  answer: t.isOptional(isStringWhere('none, voice or clients', text => (REJOIN_ANSWERS as ReadonlyArray<string>).includes(text)) as t.StrictValidator<unknown, typeof REJOIN_ANSWERS[number]>),
  startedAt: t.isOptional(isNonNegative),
  reason: t.isOptional(isText(REJOIN_REASON_MAX)),
});

export const isHeartbeat = isExactObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('heartbeat'),
  name: isName,
  pid: isPid,
  ports: isPortList,
  interval: isSeconds,
  probeTimeout: isSeconds,
  seq: isCount,
  sentAt: isNonNegative,
  probeMs: isNonNegative,
  /** Optional: reporters before several paths did not send it. */
  paths: t.isOptional(isBoundedArray(isPathInfo, {min: 1, max: MAX_PATHS})),
  /** Optional: the watched paths' block devices, one entry per device (reporters before issue 16 did not send it). */
  devices: t.isOptional(isDeviceList),
  /** Optional: destination ports to isolate this host from while fenced. */
  isolate: t.isOptional(isDistinctArray(isPort, {min: 1, max: MAX_ISOLATE})),
  /** Optional: its rejoin condition (absent: auto). */
  rejoin: t.isOptional(isRejoin),
  /** Optional: volumes its service writes to that it does not watch (absent: none, or no discovery). */
  unwatched: t.isOptional(isBoundedArray(isUnwatched, {min: 1, max: MAX_UNWATCHED})),
});

/**
 * A reporter that cannot heartbeat says why, once an interval: it never
 * re-arms a deadline (anyone who can write the FIFO could send one); the
 * monitor keeps the words for the fence's reason, status and the metrics.
 */
export const isFailing = isExactObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('failing'),
  name: isName,
  pid: isPid,
  sentAt: isNonNegative,
  reason: isStringWhere(`a reason of 1 to ${REASON_MAX} characters`, text => text.length >= 1 && text.length <= REASON_MAX),
  devices: t.isOptional(isDeviceList),
});

export const isGoodbye = isExactObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('goodbye'),
  name: isName,
  pid: isPid,
});

const isUser = t.cascade(t.isString(), [t.hasMaxLength(64)]);

export const isUnblockOne = isExactObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('unblock'),
  name: isName,
  pid: isPid,
  user: isUser,
});

export const isUnblockAll = isExactObject({
  v: t.isLiteral(PROTOCOL_VERSION),
  kind: t.isLiteral('unblock'),
  all: t.isLiteral(true),
  pid: isPid,
  user: isUser,
});

export const isUnblock = t.isOneOf([isUnblockOne, isUnblockAll], {exclusive: true});

export type Heartbeat = t.InferType<typeof isHeartbeat>;
export type PathInfo = t.InferType<typeof isPathInfo>;
export type DeviceStats = t.InferType<typeof isDeviceStats>;
export type UnwatchedVolume = t.InferType<typeof isUnwatched>;
export type Rejoin = t.InferType<typeof isRejoin>;
export type RejoinAnswer = typeof REJOIN_ANSWERS[number];
export type Failing = t.InferType<typeof isFailing>;
export type Goodbye = t.InferType<typeof isGoodbye>;
export type UnblockOne = t.InferType<typeof isUnblockOne>;
export type UnblockAll = t.InferType<typeof isUnblockAll>;
export type Unblock = t.InferType<typeof isUnblock>;
export type Message = Heartbeat | Failing | Goodbye | Unblock;
export type MessageKind = Message['kind'];

export const messageValidators: Record<MessageKind, t.StrictValidator<unknown, Message>> = {
  heartbeat: isHeartbeat,
  failing: isFailing,
  goodbye: isGoodbye,
  unblock: isUnblock,
};
