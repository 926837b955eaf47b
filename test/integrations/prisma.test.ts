// Prisma over pg-lifeline: PrismaPg given a pg-lifeline Pool, through ordinary queries, Prisma's own
// transactions, every idle backend killed, and a connection killed inside an interactive transaction.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClientKnownRequestError } from '@prisma/client/runtime/client';
import { Pool, type PoolOptions } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { generatePrismaClient, type Prisma, type PrismaClientClass } from './prisma/client.js';

let cluster: PgCluster;
let PrismaClient: PrismaClientClass;

before(async () => {
  cluster = await PgCluster.start();
  PrismaClient = await generatePrismaClient();
  await cluster.query('CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance int NOT NULL)');
});

after(async () => {
  await cluster?.destroy();
});

let poolSeq = 0;
/** Runs `fn` with a Prisma client on a fresh pg-lifeline pool, and always closes both. */
async function withPrisma(options: PoolOptions, fn: (prisma: Prisma, pool: Pool) => Promise<void>): Promise<void> {
  const pool = new Pool({ ...cluster.clientConfig(), application_name: `prisma-${++poolSeq}`, ...options });
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  try {
    await fn(prisma, pool);
  } finally {
    await prisma.$disconnect();
    await pool.end();
  }
}

/** Rows of `owner`, counted over the harness's own connection rather than through Prisma. */
async function rowsOf(owner: string): Promise<number> {
  const [row] = await cluster.query<{ n: number }>('SELECT count(*)::int AS n FROM accounts WHERE owner = $1', [owner]);
  assert.ok(row);
  return row.n;
}

/** Waits until every checkout has come back to the pool. */
function settled(pool: Pool): Promise<true> {
  return waitFor('every connection back in the pool', () => pool.stats().active === 0 && pool.idleCount === pool.totalCount);
}

describe('Prisma queries and transactions run on pg-lifeline connections', () => {
  test('create, update and findMany', async () => {
    await withPrisma({}, async (prisma, pool) => {
      const created = await prisma.account.create({ data: { owner: 'plain', balance: 100 } });
      const updated = await prisma.account.update({ where: { id: created.id }, data: { balance: { increment: 5 } } });
      assert.equal(updated.balance, 105);
      const found = await prisma.account.findMany({ where: { owner: 'plain' }, orderBy: { id: 'asc' } });
      assert.deepEqual(found, [{ id: created.id, owner: 'plain', balance: 105 }]);
      // PrismaPg takes a pg.Pool instance as its pool; anything else it treats as a config and
      // builds its own pg.Pool from, which would leave this pool untouched.
      assert.ok(pool.stats().acquired >= 3, `acquired ${pool.stats().acquired}`);
    });
  });

  test('interactive transaction: commits on one checked-out connection', async () => {
    await withPrisma({}, async (prisma, pool) => {
      const from = await prisma.account.create({ data: { owner: 'transfer', balance: 50 } });
      const to = await prisma.account.create({ data: { owner: 'transfer', balance: 0 } });
      const activeInside = await prisma.$transaction(async (tx) => {
        await tx.account.update({ where: { id: from.id }, data: { balance: { increment: -30 } } });
        await tx.account.update({ where: { id: to.id }, data: { balance: { increment: 30 } } });
        return pool.stats().active;
      });
      assert.equal(activeInside, 1, 'the transaction held one pg-lifeline checkout');
      const found = await prisma.account.findMany({ where: { owner: 'transfer' }, orderBy: { id: 'asc' } });
      assert.deepEqual(found.map((a) => a.balance), [20, 30]);
    });
  });

  test('interactive transaction: a throwing callback rolls back, and the connection comes back clean', async () => {
    await withPrisma({}, async (prisma, pool) => {
      const refusal = new Error('changed my mind');
      await assert.rejects(
        prisma.$transaction(async (tx) => {
          await tx.account.create({ data: { owner: 'regret', balance: 1 } });
          throw refusal;
        }),
        (error) => error === refusal,
      );
      assert.equal(await rowsOf('regret'), 0);
      await settled(pool);
      // Prisma sent ROLLBACK before releasing: the pool had nothing to clean up or discard.
      assert.equal(pool.stats().evictions['dirty-session'], 0);
      assert.equal(pool.totalCount, 1);
    });
  });

  test('batch transaction: both writes commit, or neither', async () => {
    await withPrisma({}, async (prisma) => {
      const [first, second] = await prisma.$transaction([
        prisma.account.create({ data: { owner: 'batch', balance: 1 } }),
        prisma.account.create({ data: { owner: 'batch', balance: 2 } }),
      ]);
      assert.deepEqual([first.balance, second.balance], [1, 2]);
      assert.equal(await rowsOf('batch'), 2);

      const failed = await prisma
        .$transaction([
          prisma.account.create({ data: { owner: 'batch-undone', balance: 1 } }),
          prisma.account.update({ where: { id: -1 }, data: { balance: { increment: 1 } } }),
        ])
        .then(() => assert.fail('the batch should fail'), (e: unknown) => e);
      // P2025: the record to update does not exist.
      assert.ok(failed instanceof PrismaClientKnownRequestError && failed.code === 'P2025', String(failed));
      assert.equal(await rowsOf('batch-undone'), 0);
    });
  });
});

describe('dead connections under Prisma', () => {
  test('every backend killed while the pool is idle: the next Prisma calls all succeed', async () => {
    await withPrisma({ max: 4 }, async (prisma, pool) => {
      const clients = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
      for (const client of clients) client.release();
      assert.equal(await cluster.terminateBackends(), 4);
      await waitFor('the pool to drop the dead connections', () => pool.stats().evictions.died === 4);

      const created = await prisma.account.create({ data: { owner: 'survivor', balance: 7 } });
      const updated = await prisma.$transaction(async (tx) =>
        tx.account.update({ where: { id: created.id }, data: { balance: { increment: 1 } } }),
      );
      assert.equal(updated.balance, 8);
      const found = await prisma.account.findMany({ where: { owner: 'survivor' }, orderBy: { id: 'asc' } });
      assert.deepEqual(found, [{ id: created.id, owner: 'survivor', balance: 8 }]);
      assert.equal(pool.stats().evictions.died, 4, 'no other connection was lost');
      assert.ok(pool.stats().connects > 4, 'the Prisma calls opened fresh connections in this pool');
    });
  });

  test('connection killed inside an interactive transaction: rolled back, typed, pool healthy, retry commits once', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await withPrisma({ max: 2 }, async (prisma, pool) => {
        let attempt = 0;
        // The same transaction both times; only its first run has its connection killed under it.
        const openAccount = (): Promise<number> =>
          prisma.$transaction(async (tx) => {
            await tx.account.create({ data: { owner: 'interrupted', balance: 10 } });
            if (++attempt === 1) {
              const [{ pid }] = await tx.$queryRaw<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
              const seen = pool.stats().invalidations;
              await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
              // Once the pool has seen the server's notice, the next statement certainly meets a
              // dead connection instead of racing the server's goodbye.
              await waitFor('the pool to see the backend die', () => pool.stats().invalidations > seen);
            }
            return tx.account.count({ where: { owner: 'interrupted' } });
          });

        const error = await openAccount().then(() => assert.fail('the transaction should fail'), (e: unknown) => e);
        // Prisma rebuilds the adapter's error from its code and message: pg-lifeline's
        // ConnectionLostError is not reachable as `cause`, but its code and explanation are kept.
        assert.ok(error instanceof PrismaClientKnownRequestError, String(error));
        assert.equal(error.code, 'PGL_CONNECTION_LOST');
        assert.match(error.message, /Connection lost/);
        assert.equal(await rowsOf('interrupted'), 0, 'the server rolled the transaction back');

        await waitFor('the dead connection to be given back and dropped', () => pool.stats().evictions.died === 1);
        await settled(pool);
        assert.equal(pool.totalCount, 0);

        assert.equal(await openAccount(), 1);
        assert.equal(await rowsOf('interrupted'), 1, 'the retry committed exactly once');
        await settled(pool);
        assert.equal(pool.totalCount, 1);
        assert.equal(pool.stats().evictions.died, 1);
      });
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
