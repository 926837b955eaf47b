import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { Pool } from '../src/index.js';

// Compile-time half: `npm test` type-checks this file first. Libraries that accept a `pg.Pool`
// (Drizzle, Kysely, Prisma's adapter-pg) type their parameter as @types/pg's Pool, so pg-lifeline's
// Pool and its clients must be assignable to pg's types, not merely similar at run time.
function acceptsPgPool(pool: pg.Pool): pg.Pool {
  return pool;
}
async function acceptsPoolClient(pool: pg.Pool): Promise<pg.PoolClient> {
  return pool.connect();
}

test('Pool is a pg.Pool to the type checker and at run time', async () => {
  const pool = new Pool({ max: 1 });
  try {
    const asPg = acceptsPgPool(pool);
    assert.ok(asPg instanceof pg.Pool);
    assert.equal(typeof acceptsPoolClient, 'function');
    assert.equal(asPg.options.max, 1);
  } finally {
    await pool.end();
  }
});
