import type {Logger} from '../log';
import type {PathPin, ProbeTarget} from '../probe';
import {fitHeartbeat, pathInfo} from './messages';
import type {HeartbeatShape} from './messages';
import type {MountChecks} from './mounts';
import type {DeviceWatches} from './startup';

/**
 * The paths watched now (--monitor ones, then what discovery adds and
 * removes) and what follows from them: the probers' targets, the mount
 * checks, the device counters, and the heartbeat's shape, fitted again to
 * the wire limit whenever the set changes (a warning said once per change).
 */
export class WatchedPaths {
  readonly pins = new Map<string, PathPin>();
  /** the probers' targets, read by PathProbers when it starts one */
  readonly targets = new Map<string, ProbeTarget>();
  private current!: HeartbeatShape;
  private said = '';

  constructor(pins: ReadonlyArray<PathPin>, private readonly base: Parameters<typeof fitHeartbeat>[0], private readonly mounts: MountChecks, private readonly devices: DeviceWatches, private readonly logger: Logger) {
    for (const pin of pins)
      this.remember(pin);
    this.refit();
  }

  get shape(): HeartbeatShape {
    return this.current;
  }

  add(pin: PathPin): void {
    this.remember(pin);
    this.mounts.add(pin);
    this.devices.add(pin);
    this.refit();
  }

  remove(path: string): void {
    this.pins.delete(path);
    this.targets.delete(path);
    this.mounts.remove(path);
    this.devices.remove(path);
    this.refit();
  }

  private remember(pin: PathPin): void {
    this.pins.set(pin.path, pin);
    this.targets.set(pin.path, {dir: pin.dir, name: this.base.name, dev: pin.dev, ino: pin.ino});
  }

  private refit(): void {
    const {shape, warnings} = fitHeartbeat(this.base, [...this.pins.values()].map(pathInfo), this.devices.all.map(w => w.node));
    this.current = shape;
    const key = warnings.join('\n');
    if (key !== this.said) {
      for (const warning of warnings)
        this.logger.warn(warning);
      this.said = key;
    }
  }
}
