/** SIGTERM/SIGINT abort the role; SIGHUP reopens the log file (logrotate `create`). */
export function handleSignals({onHangup}: {onHangup?: () => void} = {}): {signal: AbortSignal, dispose: () => void} {
  const controller = new AbortController();
  const stop = () => controller.abort();
  const hangup = () => onHangup?.();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', hangup);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      process.off('SIGHUP', hangup);
    },
  };
}
