/** How a reading call of the SDK waits between retries while Redis is unreachable. */

/** The delay before retry `attempt` (0-based): 100 ms doubled each time, at most 2 s. */
export function retryDelayMs(attempt: number): number {
  return Math.min(100 * 2 ** Math.min(attempt, 10), 2000);
}
