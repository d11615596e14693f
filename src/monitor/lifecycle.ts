import type {Rejoin} from '../heartbeat';
import type {ReporterState} from '../state';

/**
 * A reporter's lifecycle as the monitor sees it: states and events as types,
 * one transition function, no side effects (the registry carries them out).
 *
 *   healthy --deadline--> fenced --disks proven, rejoin condition met--> healthy
 *   fenced --unblock--> overridden --heartbeat--> healthy
 *
 * A fenced reporter loses its clients and its voice (the host's links to its
 * cluster's coordinator and peers) at once. Once its disks are proven again
 * (--recover consecutive heartbeats), its rejoin condition decides: `auto`
 * lifts both; `manual` waits for an operator; `program` follows the
 * reporter's rejoin program, which may give the voice back first (`voice`:
 * the node may reach the coordinator again, to learn it is no longer the
 * leader) and clients later (`clients`: it follows the new leader). While it
 * has its voice back, its heartbeats hold that voice's deadline, as they hold
 * a healthy reporter's.
 *
 * Times: `now`, `until` and `voiceUntil` are monotonic milliseconds, `sentAt`,
 * `since` and `wall` epoch milliseconds (the reporter's clock, this host's).
 */
export type Life =
  | {state: 'healthy', until: number}
  | {state: 'fenced', since: number, streak: number, lastSentAt: number | null, voiceUntil: number | null}
  | {state: 'overridden', at: number, by: string};

export const AUTO: Rejoin = Object.freeze({mode: 'auto'});

export type LifeEvent =
  /** A heartbeat whose deadline (its sentAt plus --timeout) is `until`. */
  | {type: 'heartbeat', now: number, sentAt: number, until: number, rejoin: Rejoin}
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
  /** Set when the reporter's visible state changed, or a fenced one's voice did (then `to` is 'fenced' again). */
  change: {to: ReporterState, reason: string} | null;
  /** Why nothing changed, when an event was ignored or left the reporter waiting. */
  note?: 'stale' | 'before-fence' | 'recovering' | 'waiting-operator' | 'waiting-program' | 'not-due' | 'nothing-to-lift';
};

const unchanged = (life: Life, note?: Step['note']): Step => (note === undefined ? {life, change: null} : {life, change: null, note});

/** What a fenced reporter's rejoin condition grants now: nothing, its voice, or everything. */
function granted(rejoin: Rejoin, since: number): 'none' | 'voice' | 'clients' {
  switch (rejoin.mode) {
    case 'auto':
      return 'clients';
    case 'manual':
      return 'none';
    case 'program':
      // Only a run that started after the fence began speaks of this episode.
      return rejoin.startedAt !== undefined && rejoin.startedAt >= since ? rejoin.answer ?? 'none' : 'none';
  }
}

function words(rejoin: Rejoin): string {
  return rejoin.reason === undefined || rejoin.reason === '' ? '' : `: ${rejoin.reason}`;
}

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
          const counted = {...life, streak, lastSentAt: event.sentAt};
          if (streak < config.recover)
            return unchanged(counted, 'recovering');
          const grant = granted(event.rejoin, life.since);
          if (grant === 'clients') {
            const reason = event.rejoin.mode === 'auto' ? `${streak} consecutive heartbeat${streak === 1 ? '' : 's'}` : `rejoin program: clients${words(event.rejoin)}`;
            return {life: {state: 'healthy', until: event.until}, change: {to: 'healthy', reason}};
          }
          if (grant === 'voice') {
            const voiced = {...counted, voiceUntil: Math.max(life.voiceUntil ?? 0, event.until)};
            if (life.voiceUntil !== null)
              return unchanged(voiced, 'waiting-program');
            return {life: voiced, change: {to: 'fenced', reason: `coordinator reachable again, clients still fenced: rejoin program: voice${words(event.rejoin)}`}};
          }
          // Nothing granted: a voice given back earlier is taken again (the program changed its mind).
          const note = event.rejoin.mode === 'manual' ? 'waiting-operator' : 'waiting-program';
          if (life.voiceUntil !== null)
            return {life: {...counted, voiceUntil: null}, change: {to: 'fenced', reason: `coordinator cut again: rejoin program: none${words(event.rejoin)}`}};
          return unchanged(counted, note);
        }
      }
      break;
    }
    case 'deadline':
      if (life.state === 'fenced' && life.voiceUntil !== null && event.now >= life.voiceUntil)
        return {life: {...life, voiceUntil: null, streak: 0, lastSentAt: null}, change: {to: 'fenced', reason: `coordinator cut again: no heartbeat for ${(event.silentMs / 1000).toFixed(1)} s`}};
      if (life.state !== 'healthy' || event.now < Math.min(life.until, event.held ?? Infinity))
        return unchanged(life, 'not-due');
      return {
        life: {state: 'fenced', since: event.wall, streak: 0, lastSentAt: null, voiceUntil: null},
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
