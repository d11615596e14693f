import {MAX_LINE_BYTES, MAX_UNWATCHED, PATH_FIELD_MAX, REASON_MAX, UNWATCHED_FIELD_MAX, isFailing, isHeartbeat} from '../heartbeat';
import type {DeviceStats, Failing, Heartbeat, PathInfo, RejoinAnswer, UnwatchedVolume} from '../heartbeat';
import type {PathPin} from '../probe';
import {REJOIN_REASON_BYTES} from './rejoin';

/** What every heartbeat of this reporter carries besides its sequence number, time and probe latency. */
export type HeartbeatShape = {
  name: string;
  pid: number;
  ports: Array<number>;
  /** seconds */
  interval: number;
  probeTimeout: number;
  /** the watched paths' devices, unless they would not fit */
  paths?: Array<PathInfo>;
  /** whether the devices' counters go in too */
  devices: boolean;
  /** coordinator ports this host must not reach while fenced */
  isolate?: Array<number>;
  /** absent: auto */
  rejoin?: 'manual' | 'program';
  /** discovery runs: heartbeats name the written volumes nothing watches, unless they would not fit */
  unwatched?: true;
};

export type RejoinWord = {answer: RejoinAnswer, startedAt: number, reason: string};

/** Keeps the end of a long path (the informative part) within the wire limit; never empty (a mount's source can be). */
function clip(text: string, max: number): string {
  if (text === '')
    return '-';
  return text.length <= max ? text : `\u2026${text.slice(text.length - max + 1)}`;
}

function clipEnd(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}\u2026`;
}

/** What a heartbeat says of the written volumes nothing watches: the first MAX_UNWATCHED, clipped to the wire's limits. */
export function unwatchedInfo(list: ReadonlyArray<{file: string, device: string, source: string}>): Array<UnwatchedVolume> {
  return list.slice(0, MAX_UNWATCHED).map(u => ({file: clip(u.file, UNWATCHED_FIELD_MAX.file), device: u.device, source: clip(u.source, UNWATCHED_FIELD_MAX.source)}));
}

export function pathInfo(pin: PathPin): PathInfo {
  return {
    path: clip(pin.path, PATH_FIELD_MAX.path),
    device: pin.mount.device,
    source: clip(pin.mount.source, PATH_FIELD_MAX.source),
    fstype: clip(pin.mount.fstype, PATH_FIELD_MAX.fstype),
    mountPoint: clip(pin.mount.mountPoint, PATH_FIELD_MAX.mountPoint),
  };
}

/** The largest numbers a device entry can carry, for the start-up size check. */
function worstStats(device: {device: string, name: string}): DeviceStats {
  return {device: device.device, name: device.name, inflight: 2 ** 31, ios: Number.MAX_SAFE_INTEGER, windowMs: 86_400_000.25, done: 2 ** 40, busyMs: 86_400_000.25, awaitMs: 1e9 + 0.25, quietMs: 1e12 + 0.25};
}

/** Why the monitor would drop this heartbeat (and then fence): its schema, or its size; null when it is fine. */
function problem(message: Heartbeat): string | null {
  const errors: Array<string> = [];
  if (!isHeartbeat(message, {errors}))
    return errors.join('; ');
  return Buffer.byteLength(JSON.stringify(message)) + 1 > MAX_LINE_BYTES ? `they would make a heartbeat longer than ${MAX_LINE_BYTES} bytes (PIPE_BUF)` : null;
}

/**
 * Start-up: a heartbeat with the largest numbers it could ever carry must
 * pass the monitor's schema and fit one atomic FIFO write. Better a heartbeat
 * without the devices' counters, or without the paths, than none: what had to
 * go is said once, as a warning.
 */
export function fitHeartbeat(base: Omit<HeartbeatShape, 'devices' | 'paths'>, paths: Array<PathInfo>, devices: ReadonlyArray<{device: string, name: string}>): {shape: HeartbeatShape, warnings: Array<string>} {
  // A rejoin program's longest reason, every byte a quote (escaped: two bytes each).
  const rejoin = base.rejoin === 'program' ? {answer: 'clients' as const, startedAt: Date.now() * 10, reason: '"'.repeat(REJOIN_REASON_BYTES)} : undefined;
  const unwatched = Array.from({length: MAX_UNWATCHED}, () => ({file: '"'.repeat(UNWATCHED_FIELD_MAX.file), device: '4294967295:4294967295', source: '"'.repeat(UNWATCHED_FIELD_MAX.source)}));
  const worst = (shape: HeartbeatShape): Heartbeat => heartbeatMessage(shape, {seq: Number.MAX_SAFE_INTEGER, sentAt: Date.now() * 10, probeMs: 1e9 + 0.25, devices: shape.devices ? devices.map(worstStats) : undefined, rejoin, unwatched});
  const warnings: Array<string> = [];
  // No path (discovery found none yet, or all are gone): no heartbeat goes until one is proven, and then with it.
  let shape: HeartbeatShape = {...base, ...(paths.length === 0 ? {} : {paths}), devices: devices.length > 0};
  if (shape.devices) {
    const why = problem(worst(shape));
    if (why !== null) {
      warnings.push(`heartbeats go without the devices' counters: ${why}`);
      shape = {...shape, devices: false};
    }
  }
  let why = problem(worst(shape));
  if (why !== null && shape.paths !== undefined) {
    warnings.push(`heartbeats go without the watched paths' devices: ${why}`);
    const {paths: _dropped, ...rest} = shape;
    shape = rest;
    why = problem(worst(shape));
  }
  if (why !== null && shape.unwatched !== undefined) {
    warnings.push(`heartbeats go without the volumes written but not watched: ${why}`);
    const {unwatched: _dropped, ...rest} = shape;
    shape = rest;
  }
  return {shape, warnings};
}

export function heartbeatMessage(shape: HeartbeatShape, round: {seq: number, sentAt: number, probeMs: number, devices?: Array<DeviceStats>, rejoin?: RejoinWord, unwatched?: ReadonlyArray<{file: string, device: string, source: string}>}): Heartbeat {
  return {
    v: 1,
    kind: 'heartbeat',
    name: shape.name,
    pid: shape.pid,
    ports: shape.ports,
    interval: shape.interval,
    probeTimeout: shape.probeTimeout,
    seq: round.seq,
    sentAt: round.sentAt,
    probeMs: round.probeMs,
    ...(shape.paths === undefined ? {} : {paths: shape.paths}),
    ...(shape.devices && round.devices !== undefined && round.devices.length > 0 ? {devices: round.devices} : {}),
    ...(shape.isolate === undefined || shape.isolate.length === 0 ? {} : {isolate: shape.isolate}),
    ...(shape.rejoin === undefined ? {} : {rejoin: {mode: shape.rejoin, ...(shape.rejoin === 'program' && round.rejoin !== undefined ? round.rejoin : {})}}),
    ...(shape.unwatched === undefined || round.unwatched === undefined || round.unwatched.length === 0 ? {} : {unwatched: unwatchedInfo(round.unwatched)}),
  };
}

/** The failing word, cut to fit one atomic FIFO write (a check's output can be long, in any script). */
export function failingMessage(shape: HeartbeatShape, reason: string, sentAt: number, devices?: Array<DeviceStats>): Failing {
  const list = shape.devices && devices !== undefined && devices.length > 0 ? devices : undefined;
  let message: Failing = {v: 1, kind: 'failing', name: shape.name, pid: shape.pid, sentAt, reason: clipEnd(reason, REASON_MAX), ...(list === undefined ? {} : {devices: list})};
  for (let i = 0; i < 8; i++) {
    const excess = Buffer.byteLength(JSON.stringify(message)) + 1 - MAX_LINE_BYTES;
    if (excess <= 0 && isFailing(message))
      return message;
    message = {...message, reason: clipEnd(message.reason, Math.max(64, message.reason.length - Math.max(excess, 0) - 8))};
  }
  const {devices: _dropped, ...bare} = message;
  return {...bare, reason: clipEnd(bare.reason, 512)};
}
