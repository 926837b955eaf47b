/**
 * Drizzle ORM on pg-lifeline: a schema, inserts and selects, and an order placed in a
 * db.transaction that the app retries when pg-lifeline reports a failure another try can get past.
 *
 *   npx tsx examples/drizzle-app.ts          places an order and prints the stock left
 *   npx tsx examples/drizzle-app.ts --once   self-check: the same through terminated sessions
 */
import { and, eq, gte, sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { Pool } from 'pg-lifeline';
import { withRetry } from './retry.js';
import { checkOrders, selfCheck } from './self-check.js';
import { runExample } from './throwaway.js';

const APP = 'example-drizzle-app';

const products = pgTable('products', {
  id: integer('id').primaryKey().generatedAlwaysAsIdentity(),
  name: text('name').notNull().unique(),
  stock: integer('stock').notNull(),
});

const orders = pgTable('orders', {
  id: integer('id').primaryKey().generatedAlwaysAsIdentity(),
  // One key per request: a repeated request finds its order instead of placing a second one.
  requestId: text('request_id').notNull().unique(),
  productId: integer('product_id')
    .notNull()
    .references(() => products.id),
  quantity: integer('quantity').notNull(),
  placedAt: timestamp('placed_at', { withTimezone: true }).notNull().defaultNow(),
});

type Order = typeof orders.$inferSelect;
type Db = NodePgDatabase;

// Drizzle leaves DDL to drizzle-kit migrations; plain SQL keeps the example self-contained.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS products (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    stock integer NOT NULL);
  CREATE TABLE IF NOT EXISTS orders (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    product_id integer NOT NULL REFERENCES products,
    quantity integer NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now());
`;

class OrderRefused extends Error {}

/**
 * Places an order: the order row and the stock decrement commit together or not at all. The
 * whole transaction runs again after a retryable failure, and a try that finds its request id
 * already saved (an earlier try whose COMMIT went through) returns that order instead.
 */
function placeOrder(db: Db, requestId: string, productName: string, quantity: number): Promise<Order> {
  return withRetry(`order ${requestId}`, () =>
    db.transaction(async (tx) => {
      const [product] = await tx.select({ id: products.id }).from(products).where(eq(products.name, productName));
      if (!product) throw new OrderRefused(`no product ${productName}`);
      const [order] = await tx.insert(orders).values({ requestId, productId: product.id, quantity }).onConflictDoNothing({ target: orders.requestId }).returning();
      // The conflicting row is committed (ON CONFLICT waits for that), so this statement sees it.
      if (!order) return (await tx.select().from(orders).where(eq(orders.requestId, requestId)))[0]!;
      const taken = await tx
        .update(products)
        .set({ stock: sql`${products.stock} - ${quantity}` })
        .where(and(eq(products.id, product.id), gte(products.stock, quantity)))
        .returning({ stock: products.stock });
      if (taken.length === 0) throw new OrderRefused(`not enough ${productName}`); // rolls back the order row
      return order;
    }),
  );
}

async function stockOf(db: Db, productName: string): Promise<number | undefined> {
  const [row] = await db.select({ stock: products.stock }).from(products).where(eq(products.name, productName));
  return row?.stock;
}

async function ordersFor(db: Db, requestId: string): Promise<number> {
  const [row] = await db.select({ n: sql<number>`count(*)::int` }).from(orders).where(eq(orders.requestId, requestId));
  return row?.n ?? 0;
}

async function main(url: string): Promise<void> {
  const pool = new Pool({ connectionString: url, application_name: APP, max: 5 });
  // Drizzle takes pg-lifeline's Pool as it takes pg.Pool.
  const db = drizzle({ client: pool });
  try {
    await pool.query(SCHEMA);
    const run = Date.now().toString(36); // names of this run, unique on a reused database
    const widget = `${run}-widget`;
    await db.insert(products).values({ name: widget, stock: 10 });
    const first = await placeOrder(db, `${run}-1`, widget, 2);
    console.log(`order ${first.requestId}: ${first.quantity} × ${widget}, stock now ${await stockOf(db, widget)}`);
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
    await pool.end();
  }
}

await runExample(main);
