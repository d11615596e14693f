import type {ReporterState} from '../state';

/**
 * A reporter's lifecycle as the monitor sees it: states and events as types,
 * one transition function, no side effects (the registry carries them out).
 *
 *   healthy --deadline--> fenced --recover fresh heartbeats--> healthy
 *   fenced --unblock--> overridden --heartbeat--> healthy
 *
 * Times: `now` and `until` are monotonic milliseconds, `sentAt` and `wall`
 * epoch milliseconds (the reporter's clock, which is this host's).
 */
export type Life =
  | {state: 'healthy', until: number}
  | {state: 'fenced', since: number, streak: number, lastSentAt: number | null}
  | {state: 'overridden', at: number, by: string};

export type LifeEvent =
  /** A heartbeat whose deadline (its sentAt plus --timeout) is `until`. */
  | {type: 'heartbeat', now: number, sentAt: number, until: number}
  /**
   * `wall`: when the deadline passed (epoch ms), which is earlier than now when
   * the monitor was stopped meanwhile. `held`: the deadline the kernel holds,
   * when it runs out before the reporter's own (a heartbeat read but not yet
   * written to the kernel counts for nothing once the kernel has fenced).
   * `said`: what the reporter said it failed on since its last heartbeat.
   */
  | {type: 'deadline', now: number, wall: number, silentMs: number, held?: number, said?: string}
  | {type: 'unblock', wall: number, by: string};

export type LifeConfig = {
  timeoutMs: number;
  recover: number;
};

export type Step = {
  life: Life;
  /** Set when the reporter's visible state changed. */
  change: {to: ReporterState, reason: string} | null;
  /** Why nothing changed, when an event was ignored. */
  note?: 'stale' | 'before-fence' | 'recovering' | 'not-due' | 'nothing-to-lift';
};

const unchanged = (life: Life, note?: Step['note']): Step => (note === undefined ? {life, change: null} : {life, change: null, note});

export function step(life: Life, event: LifeEvent, config: LifeConfig): Step {
  switch (event.type) {
    case 'heartbeat': {
      // A heartbeat past its own deadline proves nothing about now: it sat in
      // the FIFO while the monitor was stopped, and must never open a fence.
      if (event.until <= event.now)
        return unchanged(life, 'stale');
      switch (life.state) {
        case 'healthy':
          return unchanged({state: 'healthy', until: Math.max(life.until, event.until)});
        case 'overridden':
          return {life: {state: 'healthy', until: event.until}, change: {to: 'healthy', reason: 'heartbeat after override'}};
        case 'fenced': {
          // Proven before the fence began (it waited in the FIFO while the monitor was stopped
          // and the kernel fenced): it says nothing about the disk since.
          if (event.sentAt < life.since)
            return unchanged(life, 'before-fence');
          const consecutive = life.lastSentAt !== null && event.sentAt > life.lastSentAt && event.sentAt - life.lastSentAt <= config.timeoutMs;
          const streak = consecutive ? life.streak + 1 : 1;
          if (streak >= config.recover)
            return {life: {state: 'healthy', until: event.until}, change: {to: 'healthy', reason: `${streak} consecutive heartbeat${streak === 1 ? '' : 's'}`}};
          return unchanged({...life, streak, lastSentAt: event.sentAt}, 'recovering');
        }
      }
      break;
    }
    case 'deadline':
      if (life.state !== 'healthy' || event.now < Math.min(life.until, event.held ?? Infinity))
        return unchanged(life, 'not-due');
      return {
        life: {state: 'fenced', since: event.wall, streak: 0, lastSentAt: null},
        // Without the reporter's own words, the monitor knows only the silence (the reporter died, or is stuck itself).
        change: {to: 'fenced', reason: `no heartbeat for ${(event.silentMs / 1000).toFixed(1)} s${event.said === undefined || event.said === '' ? '' : `: ${event.said}`}`},
      };
    case 'unblock':
      if (life.state !== 'fenced')
        return unchanged(life, 'nothing-to-lift');
      return {life: {state: 'overridden', at: event.wall, by: event.by}, change: {to: 'overridden', reason: `unblock by ${event.by}`}};
  }
  return unchanged(life);
}
