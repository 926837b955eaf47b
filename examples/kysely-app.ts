/**
 * Kysely on pg-lifeline through PostgresDialect: a schema, inserts and selects, and an order
 * placed in a transaction that the app retries when pg-lifeline reports a failure another try
 * can get past.
 *
 *   npx tsx examples/kysely-app.ts          places an order and prints the stock left
 *   npx tsx examples/kysely-app.ts --once   self-check: the same through terminated sessions
 */
import { Kysely, PostgresDialect, sql, type Generated, type Selectable } from 'kysely';
import { Pool } from 'pg-lifeline';
import { withRetry } from './retry.js';
import { checkOrders, selfCheck } from './self-check.js';
import { runExample } from './throwaway.js';

const APP = 'example-kysely-app';

interface Database {
  products: { id: Generated<number>; name: string; stock: number };
  // request_id: one key per request, so a repeated request finds its order instead of placing a second one.
  orders: { id: Generated<number>; request_id: string; product_id: number; quantity: number; placed_at: Generated<Date> };
}

type Order = Selectable<Database['orders']>;
type Db = Kysely<Database>;

class OrderRefused extends Error {}

async function createSchema(db: Db): Promise<void> {
  await db.schema
    .createTable('products')
    .ifNotExists()
    .addColumn('id', 'integer', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('name', 'text', (c) => c.notNull().unique())
    .addColumn('stock', 'integer', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('orders')
    .ifNotExists()
    .addColumn('id', 'integer', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('request_id', 'text', (c) => c.notNull().unique())
    .addColumn('product_id', 'integer', (c) => c.notNull().references('products.id'))
    .addColumn('quantity', 'integer', (c) => c.notNull())
    .addColumn('placed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

/**
 * Places an order: the order row and the stock decrement commit together or not at all. The
 * whole transaction runs again after a retryable failure, and a try that finds its request id
 * already saved (an earlier try whose COMMIT went through) returns that order instead.
 */
function placeOrder(db: Db, requestId: string, productName: string, quantity: number): Promise<Order> {
  return withRetry(`order ${requestId}`, () =>
    db.transaction().execute(async (trx) => {
      const product = await trx.selectFrom('products').select('id').where('name', '=', productName).executeTakeFirst();
      if (!product) throw new OrderRefused(`no product ${productName}`);
      const order = await trx
        .insertInto('orders')
        .values({ request_id: requestId, product_id: product.id, quantity })
        .onConflict((oc) => oc.column('request_id').doNothing())
        .returningAll()
        .executeTakeFirst();
      // The conflicting row is committed (ON CONFLICT waits for that), so this statement sees it.
      if (!order) return trx.selectFrom('orders').selectAll().where('request_id', '=', requestId).executeTakeFirstOrThrow();
      const taken = await trx
        .updateTable('products')
        .set((eb) => ({ stock: eb('stock', '-', quantity) }))
        .where('id', '=', product.id)
        .where('stock', '>=', quantity)
        .executeTakeFirst();
      if (taken.numUpdatedRows === 0n) throw new OrderRefused(`not enough ${productName}`); // rolls back the order row
      return order;
    }),
  );
}

async function stockOf(db: Db, productName: string): Promise<number | undefined> {
  return (await db.selectFrom('products').select('stock').where('name', '=', productName).executeTakeFirst())?.stock;
}

async function ordersFor(db: Db, requestId: string): Promise<number> {
  const row = await db.selectFrom('orders').select((eb) => eb.fn.countAll<number>().as('n')).where('request_id', '=', requestId).executeTakeFirstOrThrow();
  return Number(row.n); // count(*) is a bigint, which pg returns as a string
}

async function main(url: string): Promise<void> {
  const pool = new Pool({ connectionString: url, application_name: APP, max: 5 });
  // Kysely takes pg-lifeline's Pool as it takes pg.Pool; db.destroy() ends it.
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await createSchema(db);
    const run = Date.now().toString(36); // names of this run, unique on a reused database
    const widget = `${run}-widget`;
    await db.insertInto('products').values({ name: widget, stock: 10 }).execute();
    const first = await placeOrder(db, `${run}-1`, widget, 2);
    console.log(`order ${first.request_id}: ${first.quantity} × ${widget}, stock now ${await stockOf(db, widget)}`);
    if (!selfCheck) return;
    await checkOrders(url, {
      app: APP,
      pool,
      placeOrder: (requestId, product, quantity) => placeOrder(db, requestId, product, quantity),
      stockOf: (product) => stockOf(db, product),
      ordersFor: (requestId) => ordersFor(db, requestId),
      refused: (error) => error instanceof OrderRefused,
    }, run, widget);
  } finally {
    await db.destroy();
  }
}

await runExample(main);
