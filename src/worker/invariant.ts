/** Loop invariants: a broken one is a bug, reported as an error naming what was expected. */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

export function invariant(cond: unknown, message: string): asserts cond {
  if (!cond) throw new InvariantError(`invariant broken: ${message}`);
}
