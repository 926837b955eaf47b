// MikroORM 7's PostgreSQL driver over pg-lifeline's Pool. MikroORM builds its pool in its connection's
// `createKyselyDialect`, the method its custom-driver guide says to override. The override here builds
// pg-lifeline's Pool from MikroORM's own `mapOptions` output (its type parsers included) and keeps its
// connection hooks. Structural types only: pg-lifeline does not depend on MikroORM or Kysely.
import type { PoolOptions } from '../config.js';
import { Pool } from '../pool.js';
import { isConnectionError } from '../postgres/classify.js';

/** Kysely's `PostgresDialect` class, or any class taking the same config. */
export type KyselyDialectClass = new (config: never) => object;

/** What `mikroOrmDriver` needs besides the driver class. */
export interface MikroOrmDriverOptions {
  /** Kysely's `PostgresDialect` (`import { PostgresDialect } from 'kysely'`). */
  readonly dialect: KyselyDialectClass;
  /** pg-cursor's `Cursor`, for MikroORM's streaming (`em.stream`); without it, streaming is unavailable. */
  readonly cursor?: unknown;
}

type Hook = (connection: unknown) => Promise<void>;

interface DialectConfig {
  pool: Pool;
  cursor?: unknown;
  onCreateConnection?: Hook;
  onReserveConnection?: Hook;
}

interface KyselyDialect {
  createDriver(): object;
  createQueryCompiler(): unknown;
  createAdapter(): unknown;
  createIntrospector(db: unknown): unknown;
}

/**
 * Kysely's controlled transaction (what MikroORM's `em.transactional` runs on) gives its connection
 * back only when ROLLBACK succeeds. On a connection that died, ROLLBACK fails, and the connection
 * would stay checked out for good: one pool slot lost per death, and `orm.close()` waiting on it.
 * A dead session has rolled back already, so its ROLLBACK is reported done and Kysely gives the
 * connection back, which the pool then discards. MikroORM still throws the error that failed the
 * transaction.
 */
function releasingDialect(dialect: KyselyDialect): KyselyDialect {
  return {
    createDriver: () => {
      const driver = dialect.createDriver() as Record<string | symbol, unknown>;
      const rollback = driver['rollbackTransaction'] as (connection: unknown) => Promise<void>;
      return new Proxy(driver, {
        get(target, key) {
          if (key === 'rollbackTransaction') {
            return (connection: unknown) =>
              rollback.call(target, connection).catch((error: unknown) => {
                if (!isConnectionError(error)) throw error;
              });
          }
          const value = Reflect.get(target, key, target);
          // Kysely's driver keeps its state in private fields, which only the real object can reach.
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
    },
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createAdapter: () => dialect.createAdapter(),
    createIntrospector: (db) => dialect.createIntrospector(db),
  };
}

/** The members of MikroORM's PostgreSqlConnection the override uses. */
interface ConnectionInternals {
  readonly config: { get(key: string): unknown };
  readonly options: Record<string, unknown>;
  mapOptions(overrides: Record<string, unknown>): Record<string, unknown>;
  ensureConnection(): Promise<void>;
  handlePoolErrors?(pool: Pool): void;
  composeSessionContextOnReserve?(hook: Hook | undefined): Hook;
}

type ConnectionClass = new (config: unknown, options?: unknown, type?: unknown) => ConnectionInternals;

/** The members of MikroORM's AbstractSqlDriver the override replaces. */
interface DriverInternals {
  readonly config: unknown;
  connection: ConnectionInternals;
  replicas: ConnectionInternals[];
  createReplicas(make: (options: unknown) => ConnectionInternals): ConnectionInternals[];
}

function lifelineConnection(Base: ConnectionClass, { dialect, cursor }: MikroOrmDriverOptions): ConnectionClass {
  const Dialect = dialect as unknown as new (config: DialectConfig) => object;
  return class LifelineConnection extends Base {
    #pool: Pool | undefined;

    createKyselyDialect(overrides: Record<string, unknown> | undefined): object {
      const { onPoolCreated, ...poolOverrides } = overrides ?? {};
      // MikroORM's own option mapping: connection settings, `pool`, `driverOptions` and its type parsers.
      const pool = new Pool(this.mapOptions(poolOverrides) as PoolOptions);
      this.#pool = pool;
      // MikroORM logs connection and pool errors as warnings; pg-lifeline keeps them from crashing either way.
      this.handlePoolErrors?.(pool);
      if (typeof onPoolCreated === 'function') void (onPoolCreated as (pool: Pool) => unknown)(pool);
      const hook = (name: string): Hook | undefined => (this.options[name] ?? this.config.get(name)) as Hook | undefined;
      const config: DialectConfig = { pool };
      if (cursor !== undefined) config.cursor = cursor;
      const onCreate = hook('onCreateConnection');
      if (onCreate !== undefined) config.onCreateConnection = onCreate;
      const onReserve = hook('onReserveConnection');
      const reserve =
        this.config.get('sessionContext') === 'connection' && this.composeSessionContextOnReserve ? this.composeSessionContextOnReserve(onReserve) : onReserve;
      if (reserve !== undefined) config.onReserveConnection = reserve;
      return releasingDialect(new Dialect(config) as KyselyDialect);
    }

    /** pg-lifeline's Pool, where MikroORM's `getNativeClient()` gives its pg.Pool. */
    async getNativeClient(): Promise<Pool> {
      await this.ensureConnection();
      if (this.#pool === undefined) throw new Error('The pool is not available: a Kysely instance or dialect was passed in `driverOptions`.');
      return this.#pool;
    }
  };
}

/**
 * A MikroORM PostgreSQL driver class whose pool is pg-lifeline's:
 * `MikroORM.init({ driver: mikroOrmDriver(PostgreSqlDriver, { dialect: PostgresDialect }), ... })`.
 * The pool is built from MikroORM's own mapped options, so its type parsers, `pool` settings and
 * `driverOptions` apply, and pg-lifeline's own options go in `driverOptions` too. MikroORM's
 * `onCreateConnection`, `onReserveConnection`, `sessionContext: 'connection'` and `onPoolCreated` hooks
 * are kept. MikroORM built the pool, so `orm.close()` ends it.
 */
export function mikroOrmDriver<D extends abstract new (config: never) => object>(Driver: D, options: MikroOrmDriverOptions): D {
  const Base = Driver as unknown as new (config: unknown) => DriverInternals;
  class LifelineDriver extends Base {
    constructor(config: unknown) {
      super(config);
      // MikroORM's driver builds its connections in its constructor (they open nothing yet); these replace them.
      const Connection = lifelineConnection(this.connection.constructor as ConnectionClass, options);
      this.connection = new Connection(this.config);
      this.replicas = this.createReplicas((replica) => new Connection(this.config, replica, 'read'));
    }
  }
  return LifelineDriver as unknown as D;
}
