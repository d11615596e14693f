import type {MountEntry} from '../mounts';
import type {WrittenVolume} from './scan';

/**
 * Which of the volumes a service writes to are watched: a pure step over
 * scans, like the reporter's lifecycle. `watch` mode (no --monitor) gives
 * each volume found and watches it at the root of its mount; `warn` mode
 * (--monitor given) watches only what the operator listed and names every
 * written volume none of them covers.
 */
export type DiscoveryConfig = {
  mode: 'watch' | 'warn';
  /** scans in a row a watched volume may be missing before it is dropped */
  graceScans: number;
  /** paths this reporter may watch in all (MAX_PATHS), --monitor ones included */
  maxPaths: number;
  /** devices ("major:minor") the --monitor paths are on */
  covered: ReadonlySet<string>;
};

/** A volume found written, with where the same filesystem is mounted in the reporter's own namespace (if it is). */
export type FoundVolume = WrittenVolume & {here?: MountEntry};

export type TrackedVolume = {
  volume: FoundVolume;
  /**
   * pinning: its mount root is being pinned; watched: probed every
   * interval under `path`; covered: a --monitor path is on it; refused: why
   * not (said in the not-watched list), decided again at each scan; failed:
   * its probe directory could not be pinned, tried again at the next scan
   * (`why` stays said meanwhile, so a retry that fails the same way says
   * nothing new)
   */
  state: {kind: 'pinning', path: string, why?: string} | {kind: 'watched', path: string} | {kind: 'covered'} | {kind: 'refused' | 'failed', why: string};
  /** scans in a row that did not find it */
  missed: number;
};

/** A volume the service writes to that nothing watches, with the file that proves it. */
export type Unwatched = {file: string, device: string, source: string, why: string};

export type Discovery = {
  config: DiscoveryConfig;
  volumes: ReadonlyMap<string, TrackedVolume>;
  /** the last not-watched list said, as a key: said again only when it changes */
  saidUnwatched: string;
  /** the last scan problem said (the service gone, a scan timed out): said again only when it changes */
  saidProblem: string;
};

export type DiscoveryEvent =
  /** `processes`: how many the scan found (0: the service is gone, or its pid file is stale) */
  | {type: 'scanned', volumes: ReadonlyArray<FoundVolume>, processes: number, what: string}
  /** the scan did not finish (deadline, no perl): nothing is concluded from it */
  | {type: 'scan-failed', reason: string}
  | {type: 'pinned', device: string, path: string}
  | {type: 'pin-failed', device: string, why: string};

export type DiscoveryEffect =
  /** pin `path` (the probe directory) on the volume, then say pinned or pin-failed */
  | {type: 'pin', device: string, path: string, volume: FoundVolume}
  | {type: 'watch', device: string, path: string, volume: FoundVolume}
  | {type: 'unwatch', device: string, path: string}
  /** the not-watched list changed (empty: everything is watched now) */
  | {type: 'unwatched', list: Array<Unwatched>}
  | {type: 'log', level: 'info' | 'warn', message: string, fields: Record<string, unknown>};

/**
 * Where a volume is probed: the root of its mount in the reporter's
 * namespace, which always exists. Not a directory of ebsmon's own there:
 * MariaDB lists every directory of its data directory as a database, and
 * the data directory is often a mount's root.
 */
export function probeDirFor(here: MountEntry): string {
  return here.mountPoint;
}

export function initialDiscovery(config: DiscoveryConfig): Discovery {
  return {config, volumes: new Map(), saidUnwatched: '', saidProblem: ''};
}

function describe(volume: WrittenVolume): string {
  return `${volume.mount.mountPoint} (${volume.mount.source}, ${volume.mount.fstype}, ${volume.device})`;
}

function watchedCount(volumes: ReadonlyMap<string, TrackedVolume>): number {
  return [...volumes.values()].filter(v => v.state.kind === 'pinning' || v.state.kind === 'watched').length;
}

export function discoveryStep(life: Discovery, event: DiscoveryEvent): {life: Discovery, effects: Array<DiscoveryEffect>} {
  const volumes = new Map(life.volumes);
  const effects: Array<DiscoveryEffect> = [];
  let saidProblem = life.saidProblem;
  const problem = (text: string) => {
    if (text !== saidProblem && text !== '')
      effects.push({type: 'log', level: 'warn', message: text, fields: {}});
    saidProblem = text;
  };
  const {config} = life;
  switch (event.type) {
    case 'scanned': {
      problem(event.processes === 0 ? `discovery: ${event.what} has no process now; its volumes stay watched for ${config.graceScans} scans` : '');
      const found = new Map(event.volumes.map(v => [v.device, v]));
      for (const [device, tracked] of volumes) {
        const volume = found.get(device);
        if (volume !== undefined) {
          volumes.set(device, {...tracked, volume, missed: 0});
          continue;
        }
        const missed = tracked.missed + 1;
        if (missed < config.graceScans) {
          volumes.set(device, {...tracked, missed});
          continue;
        }
        volumes.delete(device);
        if (tracked.state.kind === 'pinning' || tracked.state.kind === 'watched') {
          effects.push({type: 'unwatch', device, path: tracked.state.path});
          effects.push({type: 'log', level: 'info', message: `discovery: ${describeVolume(tracked)} no longer written by ${event.what} (${missed} scans): no longer watched`, fields: {device, path: tracked.state.path}});
        }
      }
      for (const volume of event.volumes) {
        const tracked = volumes.get(volume.device);
        if (config.mode === 'warn' || config.covered.has(volume.device)) {
          volumes.set(volume.device, {volume, state: config.covered.has(volume.device) ? {kind: 'covered'} : {kind: 'refused', why: 'no --monitor is on it'}, missed: 0});
          continue;
        }
        if (tracked !== undefined && (tracked.state.kind === 'pinning' || tracked.state.kind === 'watched'))
          continue;
        if (volume.here === undefined) {
          volumes.set(volume.device, {volume, state: {kind: 'refused', why: 'not mounted in the reporter\'s mount namespace'}, missed: 0});
          continue;
        }
        if (watchedCount(volumes) + config.covered.size >= config.maxPaths) {
          volumes.set(volume.device, {volume, state: {kind: 'refused', why: `over the limit of ${config.maxPaths} watched paths`}, missed: 0});
          continue;
        }
        const path = probeDirFor(volume.here);
        volumes.set(volume.device, {volume, state: {kind: 'pinning', path, ...(tracked?.state.kind === 'failed' ? {why: tracked.state.why} : {})}, missed: 0});
        effects.push({type: 'pin', device: volume.device, path, volume});
      }
      break;
    }
    case 'scan-failed':
      problem(`discovery: ${event.reason}; the watched volumes stay as they are`);
      break;
    case 'pinned': {
      const tracked = volumes.get(event.device);
      if (tracked?.state.kind !== 'pinning' || tracked.state.path !== event.path)
        break;
      volumes.set(event.device, {...tracked, state: {kind: 'watched', path: event.path}});
      effects.push({type: 'watch', device: event.device, path: event.path, volume: tracked.volume});
      effects.push({type: 'log', level: 'info', message: `discovery: ${tracked.volume.file} is written on ${describe(tracked.volume)}: watching it in ${event.path}`,
        fields: {device: event.device, path: event.path, file: tracked.volume.file, pid: tracked.volume.pid, files: tracked.volume.count}});
      break;
    }
    case 'pin-failed': {
      const tracked = volumes.get(event.device);
      if (tracked?.state.kind !== 'pinning')
        break;
      volumes.set(event.device, {...tracked, state: {kind: 'failed', why: `cannot probe at the root of its mount: ${event.why}`}});
      break;
    }
  }
  const list = unwatchedList(volumes);
  const key = list.map(u => `${u.device} ${u.why}`).join('\n');
  let saidUnwatched = life.saidUnwatched;
  if (key !== saidUnwatched) {
    saidUnwatched = key;
    effects.push({type: 'unwatched', list});
    for (const u of list)
      effects.push({type: 'log', level: 'warn', message: `${u.file} on ${u.source}, not watched: ${u.why}`, fields: {device: u.device, file: u.file}});
  }
  return {life: {...life, volumes, saidUnwatched, saidProblem}, effects};
}

function describeVolume(tracked: TrackedVolume): string {
  return describe(tracked.volume);
}

/** Every volume written that no path watches, in device order. */
export function unwatchedList(volumes: ReadonlyMap<string, TrackedVolume>): Array<Unwatched> {
  return [...volumes.values()]
    .flatMap(v => {
      const why = v.state.kind === 'refused' || v.state.kind === 'failed' || v.state.kind === 'pinning' ? v.state.why : undefined;
      return why === undefined ? [] : [{file: v.volume.file, device: v.volume.device, source: v.volume.mount.source, why}];
    })
    .sort((a, b) => a.device.localeCompare(b.device));
}
