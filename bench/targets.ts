import pg from 'pg';
import postgres from 'postgres';
import { Pool, type PoolOptions } from '../src/index.js';

export type LibName = 'pg-lifeline' | 'pg.Pool' | 'postgres.js' | 'pg pipeline';
export const PK_ROWS = 100_000;

/** The same operations on each library. `checkout` resolves to a release function, or is undefined (n/a). */
export interface Lib {
  name: LibName;
  select1(): Promise<unknown>;
  pkRead(id: number): Promise<unknown>;
  insert(v: number): Promise<unknown>;
  transaction?(v: number): Promise<unknown>;
  checkout?(): Promise<() => void>;
  end(): Promise<void>;
}

const PK_SQL = 'SELECT id, v FROM bench_kv WHERE id = $1';
const INSERT_SQL = 'INSERT INTO bench_ins (v) VALUES ($1)';

export function lifeline(url: string, extra: Omit<PoolOptions, 'connectionString' | 'max'> = {}, name: LibName = 'pg-lifeline'): Lib & { pool: Pool } {
  const pool = new Pool({ connectionString: url, max: 10, ...extra });
  pool.on('error', () => {});
  return {
    name,
    pool,
    select1: () => pool.query('SELECT 1'),
    pkRead: (id) => pool.query(PK_SQL, [id]),
    insert: (v) => pool.query(INSERT_SQL, [v]),
    transaction: (v) => pool.transaction((c) => c.query(INSERT_SQL, [v])),
    checkout: async () => {
      const c = await pool.connect();
      return () => c.release();
    },
    end: () => pool.end(),
  };
}

export function pgPool(url: string, extra: pg.PoolConfig = {}): Lib {
  const pool = new pg.Pool({ connectionString: url, max: 10, ...extra });
  pool.on('error', () => {}); // an idle client's death would otherwise crash the process
  return {
    name: 'pg.Pool',
    select1: () => pool.query('SELECT 1'),
    pkRead: (id) => pool.query(PK_SQL, [id]),
    insert: (v) => pool.query(INSERT_SQL, [v]),
    transaction: async (v) => {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(INSERT_SQL, [v]);
        await c.query('COMMIT');
        c.release();
      } catch (error) {
        await c.query('ROLLBACK').catch(() => {});
        c.release(error as Error);
        throw error;
      }
    },
    checkout: async () => {
      const c = await pool.connect();
      return () => c.release();
    },
    end: () => pool.end(),
  };
}

export function postgresJs(url: string): Lib {
  const sql = postgres(url, { max: 10, onnotice: () => {} });
  return {
    name: 'postgres.js',
    select1: () => sql`SELECT 1`.then((r) => r),
    pkRead: (id) => sql`SELECT id, v FROM bench_kv WHERE id = ${id}`.then((r) => r),
    insert: (v) => sql`INSERT INTO bench_ins (v) VALUES (${v})`.then((r) => r),
    transaction: (v) => sql.begin((tx) => tx`INSERT INTO bench_ins (v) VALUES (${v})`),
    checkout: async () => {
      const r = await sql.reserve();
      return () => r.release();
    },
    end: () => sql.end({ timeout: 0 }),
  };
}

/** pg 8.23 pipeline mode: 10 pipelined Clients, each call round-robined onto one (no pool). */
export async function pgPipeline(url: string): Promise<Lib> {
  const clients = Array.from({ length: 10 }, () => new pg.Client({ connectionString: url, pipeline: true } as pg.ClientConfig));
  for (const c of clients) c.on('error', () => {});
  await Promise.all(clients.map((c) => c.connect()));
  let next = 0;
  const pick = (): pg.Client => clients[next++ % clients.length]!;
  return {
    name: 'pg pipeline',
    select1: () => pick().query('SELECT 1'),
    pkRead: (id) => pick().query(PK_SQL, [id]),
    insert: (v) => pick().query(INSERT_SQL, [v]),
    end: async () => {
      await Promise.all(clients.map((c) => c.end()));
    },
  };
}

/** The three libraries compared everywhere, in the order they are reported. */
export function standardLibs(url: string): Lib[] {
  return [lifeline(url), pgPool(url), postgresJs(url)];
}

export const randomId = (): number => 1 + Math.floor(Math.random() * PK_ROWS);
