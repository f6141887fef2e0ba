// `npm ci` runs this (the package's install script): builds the oneDNN kernel addon when Debian's
// libdnnl-dev and a C++ compiler are present, and otherwise says why not and succeeds, so the
// engine falls back to stock tfjs-wasm kernels. It never fails the install.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const say = (m) => console.log(`batchgen native kernels: ${m}`);

function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  // npm ships node-gyp inside itself
  const npmCli = process.env.npm_execpath;
  const candidates = [
    npmCli && join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((c) => c && existsSync(c)) ?? null;
}

function hasCompiler() {
  try {
    execFileSync(process.env.CXX ?? 'g++', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function main() {
  if (process.env.BATCHGEN_SKIP_NATIVE === '1') return say('skipped (BATCHGEN_SKIP_NATIVE=1); stock tfjs-wasm kernels will run');
  if (!existsSync('/usr/include/oneapi/dnnl/dnnl.hpp'))
    return say('skipped: oneDNN headers not found (apt-get install libdnnl-dev); stock tfjs-wasm kernels will run');
  if (!hasCompiler()) return say('skipped: no C++ compiler (apt-get install g++); stock tfjs-wasm kernels will run');
  const gyp = nodeGyp();
  if (gyp === null) return say('skipped: node-gyp not found; stock tfjs-wasm kernels will run');
  const nodedir = existsSync('/usr/include/node/node_api.h') ? ['--nodedir=/usr'] : [];
  const r = spawnSync(process.execPath, [gyp, 'rebuild', '--loglevel=warn', ...nodedir], { cwd: here, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status === 0) return say('built native/build/Release/batchgen_native.node (oneDNN)');
  say(`build failed (exit ${r.status}); stock tfjs-wasm kernels will run`);
}

main();
