/** Prometheus's own checker of the text format and its naming conventions (`promtool check metrics`). */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Where promtool is (Debian package `prometheus`). */
export const PROMTOOL = process.env.PROMTOOL ?? '/usr/bin/promtool';

/** Why the promtool checks are skipped, or false when promtool is there. */
export const promtoolMissing: string | false = existsSync(PROMTOOL)
  ? false
  : `promtool is not installed (${PROMTOOL}; apt-get install prometheus)`;

/** Feeds `text` to `promtool check metrics`; resolves with its exit code and everything it printed. */
export function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, output }));
    p.stdin.end(text);
  });
}
