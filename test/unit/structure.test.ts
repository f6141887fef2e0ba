/**
 * The habits the layout relies on, checked on the sources: imports point one way (shared at the
 * bottom, model above it, the compiler above both, the CLI at the top), and no module grows past
 * what a newcomer reads in one sitting.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SRC = join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : n.endsWith('.ts') ? [p] : [];
  });
}

/** The project folders a source file imports from (`src/<folder>/...`). */
function importedFolders(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'(\.{1,2}\/[^']+)'/g)) {
    const target = relative(SRC, join(dirname(file), m[1]));
    if (!target.startsWith('..')) out.push(target.split('/')[0]);
  }
  return out;
}

/** What each layer may import besides itself. */
const ALLOWED: Record<string, string[]> = {
  shared: ['observability'],
  observability: [],
  model: ['shared'],
  compiler: ['model', 'shared'],
  local: ['shared'],
  producer: ['model', 'shared', 'observability'],
  worker: ['compiler', 'model', 'shared', 'observability'],
  autoscaler: ['local', 'shared', 'observability'],
  cli: ['autoscaler', 'compiler', 'local', 'model', 'observability', 'producer', 'shared', 'worker'],
};

test('imports point one way between the layers of src/', () => {
  const wrong: string[] = [];
  for (const file of sources(SRC)) {
    const layer = relative(SRC, file).split('/')[0];
    if (!(layer in ALLOWED)) continue; // src/index.ts, the package entry, may import anything
    for (const to of importedFolders(file)) {
      if (to !== layer && !to.endsWith('.ts') && !ALLOWED[layer].includes(to)) wrong.push(`${relative(ROOT, file)} imports src/${to}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('every folder of src/ has its place in the layers', () => {
  const folders = readdirSync(SRC).filter((n) => statSync(join(SRC, n)).isDirectory());
  assert.deepEqual(
    folders.filter((f) => !(f in ALLOWED)),
    [],
  );
});

test('no module of src/ is longer than about 450 lines', () => {
  const long = sources(SRC)
    .map((f) => ({ f: relative(ROOT, f), n: readFileSync(f, 'utf8').split('\n').length }))
    .filter((x) => x.n > 460);
  assert.deepEqual(long, []);
});
