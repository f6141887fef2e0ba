/**
 * Runs node scripts side by side, started together: each prints one JSON line once loaded and
 * warmed, waits for a line on stdin, runs, and prints its result as a second JSON line.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { type CpuLoad, cpuLoadMeter } from './cpu-load.js';

export interface SideBySide<R> {
  /** ms from "go" to the last result line */
  ms: number;
  /** each process's ready line */
  ready: Record<string, unknown>[];
  results: R[];
  /** CPU used while they ran, by them and by the rest of the machine */
  load: CpuLoad | null;
}

/** The JSON lines a process prints on stdout, collected as they come. */
function lineCollector(p: ChildProcess): string[] {
  const out: string[] = [];
  let buf = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      out.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  return out;
}

const exited = (p: ChildProcess) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));

/** Waits until every process has printed `n` lines; rejects when one exits before. */
async function untilLines(procs: ChildProcess[], lines: string[][], n: number): Promise<void> {
  while (!lines.every((l) => l.length >= n)) {
    const dead = procs.findIndex((p, i) => lines[i].length < n && (p.exitCode !== null || p.signalCode !== null));
    if (dead >= 0) throw new Error(`side-by-side process ${dead} exited (${procs[dead].exitCode ?? procs[dead].signalCode}) early`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One process per argument list (`node SCRIPT ...args`), "go" sent to all at once after every one is ready. */
export async function runSideBySide<R>(script: string, argLists: string[][]): Promise<SideBySide<R>> {
  const procs = argLists.map((args) => spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const lines = procs.map(lineCollector);
  try {
    await untilLines(procs, lines, 1);
    const t0 = performance.now();
    const meter = cpuLoadMeter();
    for (const p of procs) p.stdin!.end('go\n');
    await untilLines(procs, lines, 2);
    const ms = performance.now() - t0;
    const load = meter();
    await Promise.all(procs.map(exited));
    return { ms, load, ready: lines.map((l) => JSON.parse(l[0])), results: lines.map((l) => JSON.parse(l[1]) as R) };
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}
