/**
 * pg-lifeline: a drop-in `pg.Pool` that never hands out a dead connection, never crashes the
 * process when one dies, and explains every failure.
 */
export { Pool, type AcquireOptions, type LeasedClient } from './pool.js';
export type { PoolOptions, ResolvedPoolOptions, ClientConstructor } from './config.js';
export type { IsolationLevel, TransactionOptions } from './postgres/transaction.js';
export type { EvictionEvent } from './postgres/manager.js';
export type { EvictionReason, PoolStats } from './stats.js';
export {
  LifelineError,
  ConfigError,
  AcquireTimeoutError,
  AbortedError,
  PoolEndedError,
  ConnectFailedError,
  ConnectionLostError,
  ClientReleasedError,
  DoubleReleaseError,
  TransactionRolledBackError,
  type LifelineErrorCode,
  type AcquireTimeoutReason,
  type ConnectionFacts,
  type PoolCounts,
} from './errors.js';
export { isConnectionError, isServerWideFailure, isPermanentConnectError } from './postgres/classify.js';
