/**
 * `pg-lifeline/pg`: the `pg` module with pg-lifeline's Pool and Client in place of pg's, for
 * libraries that take a driver module and build their own pool (TypeORM's `driver` option) or their
 * own clients (Sequelize's `dialectModule` / `pgModule`) from it. Both are subclasses of pg's, so
 * `instanceof pg.Pool` and `instanceof pg.Client` hold. Everything else is pg's own object, not a
 * copy: `types`, `defaults` and the other classes keep their identity, so a type parser registered
 * through either module applies to both.
 *
 * pg's lazy `native` binding is left out: a library that finds it switches to pg-native's Client,
 * which the Pool does not support.
 */
// From the library's entry, never its files: the build keeps './index.js' external, so both
// entries share one copy of every class (one Pool, one Client, one set of error classes).
export { Pool, Client } from './index.js';
export type { PoolOptions, ClientOptions } from './index.js';
export { Query, Connection, Result, TypeOverrides, DatabaseError, types, defaults, escapeIdentifier, escapeLiteral } from 'pg';
export type {
  ClientConfig,
  ConnectionConfig,
  PoolClient,
  QueryConfig,
  QueryArrayConfig,
  QueryConfigValues,
  QueryResult,
  QueryArrayResult,
  QueryResultBase,
  QueryResultRow,
  FieldDef,
  Notification,
  Submittable,
  CustomTypesConfig,
  Defaults,
} from 'pg';
