#!/usr/bin/env node
// The `batchgen` command. The TypeScript sources are compiled to dist/ by `npm ci` (prepare) or `npm run build`.
import { existsSync } from 'node:fs';
const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('batchgen: dist/ is missing; run `npm run build` (npm ci runs it too)\n');
  process.exit(1);
}
await import(entry.href);
