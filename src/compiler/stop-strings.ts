/**
 * Stop strings, checked on the host as OpenAI does: after each step the row's generated tokens are
 * decoded and each stop string is looked for in the text, so a stop may span token boundaries. The
 * earliest match ends the row; its text is cut before the stop string.
 */

export interface StopMatch {
  /** Index in the text where the stop string starts. */
  index: number;
  stop: string;
}

/** The earliest occurrence of any of `stops` in `text` (the longest stop at a tie), or null. */
export function firstStop(text: string, stops: readonly string[]): StopMatch | null {
  let best: StopMatch | null = null;
  for (const stop of stops) {
    if (stop.length === 0) continue;
    const index = text.indexOf(stop);
    if (index < 0) continue;
    if (best === null || index < best.index || (index === best.index && stop.length > best.stop.length)) best = { index, stop };
  }
  return best;
}

/**
 * Decodes a row's generated ids and checks its stop strings: the text cut before the earliest stop,
 * or null when none occurs yet. Decoding the whole row each step keeps multi-byte characters split
 * across tokens right.
 */
export async function checkStopStrings(
  ids: number[],
  stops: readonly string[],
  decode: (ids: number[]) => Promise<string>,
): Promise<{ text: string; stop: string } | null> {
  if (stops.length === 0 || ids.length === 0) return null;
  const text = await decode(ids);
  const m = firstStop(text, stops);
  return m === null ? null : { text: text.slice(0, m.index), stop: m.stop };
}
