// Runs one scenario on pg-lifeline only, for `node --cpu-prof`. Usage: profile.ts <kind> <query|-> <concurrency>
import { runLoad } from './lib.js';
import { lifeline } from './targets.js';
import { opFor, type Query } from './scenarios/steady.js';

const [kind, query, conc] = process.argv.slice(2);
const url = process.env.BENCH_URL;
if (!url || !kind) throw new Error('usage: BENCH_URL=... profile.ts <steady|checkout|tx> <query|-> <concurrency>');
const lib = lifeline(url);
const concurrency = Number(conc ?? 16);
const op =
  kind === 'steady'
    ? opFor(lib, query as Query)
    : kind === 'checkout'
      ? async () => (await lib.checkout!())()
      : (i: number) => lib.transaction!(i);
await runLoad(op, concurrency, 300);
const r = await runLoad(op, concurrency, Number(process.env.BENCH_PROFILE_MS ?? 3000));
await lib.end();
console.log(JSON.stringify({ opsPerSec: Math.round(r.opsPerSec), errors: r.errors }));
