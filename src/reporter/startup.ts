import fs from 'node:fs';
import path from 'node:path';

import {StartupError} from '../errors';
import {MAX_PATHS} from '../heartbeat';
import type {Logger} from '../log';
import {REJOIN_TIMEOUT_MS} from './rejoin';
import {describeMount} from '../mounts';
import type {MountEntry} from '../mounts';
import {DeviceWatch, logfileWarnings, pinPath, resolveDevice} from '../probe';
import type {PathPin} from '../probe';

const PROTECTED_HARDLINKS = '/proc/sys/fs/protected_hardlinks';

export function defaultName(monitorDir: string): string {
  return path.basename(path.resolve(monitorDir));
}

/** Every watched path resolved and pinned to its mount, with what an operator must know about it. */
export function pinAll(given: ReadonlyArray<string>, {requireMount = false, logfile}: {requireMount?: boolean, logfile?: string}, logger: Logger, entries: ReadonlyArray<MountEntry>): Array<PathPin> {
  if (given.length > MAX_PATHS)
    throw new StartupError(`--monitor given ${given.length} times; at most ${MAX_PATHS} paths per reporter`);
  const pins: Array<PathPin> = [];
  for (const monitor of given) {
    const pin = pinPath(monitor, entries);
    const twin = pins.find(p => p.dir === pin.dir);
    if (twin !== undefined)
      throw new StartupError(`--monitor=${monitor} is the same directory as --monitor=${twin.path} (${pin.dir})`);
    pins.push(pin);
    logger.info(`watching ${pin.dir === monitor ? monitor : `${monitor} (${pin.dir})`} on ${describeMount(pin.mount)}`, {path: monitor, device: pin.mount.device, mountId: pin.mount.id, source: pin.mount.source, fstype: pin.mount.fstype, mountPoint: pin.mount.mountPoint});
    for (const warning of pin.warnings)
      logger.warn(warning, {path: monitor});
  }
  const unmounted = pins.flatMap(pin => pin.unmounted);
  if (requireMount && unmounted.length > 0)
    throw new StartupError(`${unmounted.join('; ')} (--require-mount: refusing to start)`);
  for (const problem of unmounted)
    logger.warn(problem);
  if (logfile !== undefined) {
    for (const warning of logfileWarnings(logfile, pins, entries))
      logger.warn(warning);
  }
  return pins;
}

/** What fs.protected_hardlinks guarantees here, said once at start-up. */
export function logHardlinkProtection(logger: Logger): void {
  let value = '';
  try {
    value = fs.readFileSync(PROTECTED_HARDLINKS, 'utf8').trim();
  } catch {}
  if (value === '1')
    logger.info('fs.protected_hardlinks=1: a user can hard-link only files it owns or can write, so no link at the probe name can lead to a file that user could not already change', {protectedHardlinks: 1});
  else
    logger.warn(`fs.protected_hardlinks=${value === '' ? 'unknown' : value}: any user who can write a watched directory can hard-link other files of that filesystem to the probe name; the probe refuses a file with more than one link, but set fs.protected_hardlinks=1`, {protectedHardlinks: value});
}

/**
 * Each pinned device's own counters, read every interval from sysfs (never
 * from the device). Paths on one device share a watch; a path with none
 * (tmpfs, NFS, FUSE) is said once. Paths found at run time (discovery) come
 * and go; a device's watch is closed with its last path.
 */
export class DeviceWatches {
  readonly byPath = new Map<string, DeviceWatch>();
  private readonly byDevice = new Map<string, DeviceWatch>();

  constructor(private readonly logger: Logger) {
  }

  get all(): Array<DeviceWatch> {
    return [...this.byDevice.values()];
  }

  add(pin: PathPin): void {
    const {logger} = this;
    const resolved = resolveDevice(pin.mount, pin.device);
    if (resolved.node === null) {
      logger.info(`no device evidence for ${pin.path}: ${resolved.why}`, {path: pin.path});
      return;
    }
    const node = resolved.node;
    let watch = this.byDevice.get(node.device);
    if (watch === undefined) {
      try {
        watch = new DeviceWatch(node);
      } catch (error) {
        logger.warn(`no device evidence for ${pin.path}: cannot read ${node.dir}: ${(error as Error).message}`, {path: pin.path});
        return;
      }
      this.byDevice.set(node.device, watch);
    }
    this.byPath.set(pin.path, watch);
    logger.info(`device evidence for ${pin.path}: ${node.name} (${node.device}${node.detail === '' ? '' : `; ${node.detail}`}), its counters read from ${node.dir}`, {path: pin.path, device: node.device, deviceName: node.name});
  }

  remove(path: string): void {
    const watch = this.byPath.get(path);
    this.byPath.delete(path);
    if (watch === undefined || [...this.byPath.values()].includes(watch))
      return;
    this.byDevice.delete(watch.node.device);
    watch.close();
  }
}

export function watchDevices(pins: ReadonlyArray<PathPin>, logger: Logger): DeviceWatches {
  const watches = new DeviceWatches(logger);
  for (const pin of pins)
    watches.add(pin);
  return watches;
}

/** Start-up: what a fence takes from this host beyond its ports, and when it may lift. */
export function logClusterRoles(logger: Logger, isolate: ReadonlyArray<number>, rejoin: {mode: 'auto' | 'manual'} | {mode: 'program', program: {text: string}}, stateDir: string): void {
  if (isolate.length > 0)
    logger.info(`isolate: while fenced, this host reaches no port ${isolate.join(',')} (its coordinator) and its late replies are held`, {isolate: isolate.join(',')});
  if (rejoin.mode === 'program')
    logger.info(`rejoin: while fenced and its disks pass, ${rejoin.program.text} runs each interval (exit 10: the coordinator again; exit 0: clients again; killed after ${REJOIN_TIMEOUT_MS / 1000} s); the monitor's word is read from ${stateDir}`, {rejoin: rejoin.program.text});
  else if (rejoin.mode === 'manual')
    logger.info('rejoin: manual; a fence lifts only by ebsmon unblock');
}
