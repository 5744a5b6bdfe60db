/**
 * Calls a user-supplied callback (a watch or disconnect handler) from library code. A
 * throwing callback is the caller's bug: it is rethrown on the next tick, where it
 * surfaces as an uncaught exception, instead of unwinding the connection's own reader.
 */
export function invokeCallback<A extends unknown[]>(fn: ((...args: A) => void) | undefined, ...args: A): void {
  if (fn === undefined) return;
  try {
    fn(...args);
  } catch (err) {
    process.nextTick(() => {
      throw err;
    });
  }
}
