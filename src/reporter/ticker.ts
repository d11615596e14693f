/**
 * Ticks on wall-clock multiples of the interval (every second on the second
 * by default). Every reporter on a host then probes and heartbeats within the
 * same few milliseconds, and the monitor re-arms them all in one nft
 * transaction and one wake-up, instead of one each.
 */
export function alignedTicker(intervalMs: number, tick: () => void, now: () => number = Date.now): {stop: () => void} {
  let last = Math.floor(now() / intervalMs) * intervalMs;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    const at = Math.max(last + intervalMs, Math.floor(now() / intervalMs) * intervalMs + intervalMs);
    last = at;
    timer = setTimeout(() => {
      tick();
      schedule();
    }, Math.max(0, at - now()));
  };
  schedule();
  return {stop: () => clearTimeout(timer)};
}
