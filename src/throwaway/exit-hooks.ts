/**
 * Runs `cleanup` when the process exits, and also on SIGINT, SIGTERM and SIGHUP, where 'exit'
 * never fires: the process then dies of the same signal, unless someone else handles it.
 * `cleanup` must be synchronous.
 */
export function onProcessExit(cleanup: () => void): void {
  process.on('exit', cleanup);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanup();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}
