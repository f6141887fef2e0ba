/**
 * CPU used during a timed part, from /proc (Linux): by this process and its descendants (workers,
 * Redis, runners), and by everything else on the machine. On a machine shared with other work, rows
 * measured one after the other saw different loads: `other_cores` says how much.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's times (USER_HZ, 100 on Linux). */
const HZ = 100;

export interface CpuLoad {
  /** cores used on average by this process and its descendants */
  own_cores: number;
  /** cores used on average by everything else (steal included) */
  other_cores: number;
}

/** Busy ticks of all CPUs: user, nice, system, irq, softirq, steal. */
function systemBusyTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
}

/** A process's parent and its ticks, its reaped children's included; null once gone. */
function procTicks(pid: number): { ppid: number; ticks: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // fields after the command name (in parentheses, which may hold spaces): state ppid ...
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

/**
 * Ticks of this process and its live descendants. A child reaped in between moves into its
 * parent's children's ticks, so differences of this count what the tree used.
 */
function ownTicks(): number {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const p = procTicks(Number(d));
    if (p) procs.set(Number(d), p);
  }
  const mine = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, p] of procs)
      if (!mine.has(pid) && mine.has(p.ppid)) {
        mine.add(pid);
        grew = true;
      }
  }
  let ticks = 0;
  for (const pid of mine) ticks += procs.get(pid)?.ticks ?? 0;
  return ticks;
}

/** Starts measuring; the function returned ends it (null where /proc is not there). */
export function cpuLoadMeter(): () => CpuLoad | null {
  if (!existsSync('/proc/stat')) return () => null;
  const t0 = performance.now();
  const sys0 = systemBusyTicks();
  const own0 = ownTicks();
  return () => {
    const wallS = (performance.now() - t0) / 1000;
    const own = (ownTicks() - own0) / HZ;
    const all = (systemBusyTicks() - sys0) / HZ;
    return { own_cores: own / wallS, other_cores: Math.max(0, all - own) / wallS };
  };
}
