/**
 * Whether the webgpu tests can run here: a child process asks Dawn for an adapter (so this process
 * keeps its own backend choice). Returns why not, or false when an adapter answers.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function webgpuSkipReason(): Promise<string | false> {
  const webgpuJs = path.join(here, '..', '..', 'src', 'compiler', 'webgpu.js');
  const script = `import { loadWebgpu } from ${JSON.stringify(webgpuJs)};
    try { const a = await loadWebgpu(); console.log('ADAPTER ' + JSON.stringify(a)); }
    catch (e) { console.log('NONE ' + e.message); }`;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 }, (err, stdout) => {
      const line = stdout.split('\n').find((l) => l.startsWith('ADAPTER ') || l.startsWith('NONE '));
      if (line?.startsWith('ADAPTER ')) resolve(false);
      else resolve(line ? `no WebGPU adapter: ${line.slice(5)}` : `the adapter probe failed: ${err?.message ?? 'no output'}`);
    });
  });
}
