/**
 * Where native kernel set-up (a oneDNN primitive created, a weight packed) is announced. The retrace
 * counter listens: set-up after a variant's warm-up counts as a retrace, like a new kernel signature.
 * A module of its own so that the kernels and the counter need not import each other.
 */
type Listener = (what: string) => void;
let listener: Listener | null = null;

export function onNativeCreation(l: Listener): void {
  listener = l;
}

export function announceNativeCreation(what: string): void {
  listener?.(what);
}
