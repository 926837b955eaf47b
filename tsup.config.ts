import { defineConfig } from 'tsup';

// One CommonJS build with its declarations; scripts/esm-entry.mjs then writes the ESM entry as a
// re-export of it, so `import` and `require` in one process share every class (`instanceof` holds).
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  external: ['pg'],
});
