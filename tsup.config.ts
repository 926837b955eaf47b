import { defineConfig } from 'tsup';

// One entry, two formats: ESM for `import`, CommonJS for `require`, each with its own declarations.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  external: ['pg'],
});
