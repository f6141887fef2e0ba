/** The workers a plan is built over (slots), and the small helpers of the policy's passes. */
import type { PolicySettings, WorkerAction, WorkerState } from './types.js';

export const EPS = 1e-9;

/** A worker being planned: one that exists, or one to start. */
export interface Slot {
  id: string;
  worker: WorkerState | null;
  keys: string[];
  models: ReadonlySet<string>;
  budget: number;
  action: WorkerAction;
  /** keys this plan gave it (memory is checked for these) */
  added: Set<string>;
}

const STATE_RANK: Record<string, number> = { idle: 0, busy: 1, warming: 2, starting: 3 };

export const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(x < 10 ? 2 : 1));

/** Where a key is to go, and why there (for the reason line). */
export interface Choice {
  slot: Slot;
  how: string;
}

/** Keys handed from one worker to others, and the compile seconds that costs. */
export interface HandOver {
  moves: [string, Slot][];
  cost: number;
}

/** Placement prefers the readiest worker: idle, busy, warming, starting, any other state, a new one. */
export const stateRank = (x: Slot): number => (x.worker ? (STATE_RANK[x.worker.state] ?? 4) : 5);

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}

export function definedOnly(o: PolicySettings): Partial<PolicySettings> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<PolicySettings>;
}
