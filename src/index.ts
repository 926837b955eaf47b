/**
 * pg-lifeline: a drop-in `pg.Pool` that never hands out a dead connection, never crashes the
 * process when one dies, and explains every failure.
 */
export { Pool, type AcquireOptions, type LeasedClient, type StatementOptions } from './pool.js';
export type { PoolOptions, ResolvedPoolOptions, ClientConstructor, RetryOptions, ResolvedRetry } from './config.js';
export type { IsolationLevel, TransactionOptions } from './postgres/transaction.js';
export type { TargetSessionAttrs } from './postgres/hosts.js';
export type { EvictionEvent } from './postgres/reporter.js';
export type { EvictionReason, PoolStats } from './stats.js';
export {
  LifelineError,
  ConfigError,
  AcquireTimeoutError,
  AbortedError,
  PoolEndedError,
  ConnectFailedError,
  ConnectionLostError,
  OutcomeUnknownError,
  QueryTimeoutError,
  CommitOutcomeUnknownError,
  ServerUnavailableError,
  NoMatchingHostError,
  isOutcomeUnknown,
  ClientReleasedError,
  DoubleReleaseError,
  TransactionRolledBackError,
  CredentialProviderError,
  ListenError,
  type LifelineErrorCode,
  type AcquireTimeoutReason,
  type ConnectionFacts,
  type Outcome,
  type PoolCounts,
} from './errors.js';
export { classifyFailure, isConnectionError, isServerWideFailure, isPermanentConnectError, isSafeToRetry, outcomeOf, type FailureKind, type RetryFacts } from './postgres/classify.js';
export type { RetryEvent } from './postgres/retrier.js';
export type { CredentialTarget, ExpiringPassword, PasswordProvider, PasswordResult } from './postgres/credentials.js';
export { Listener, type ListenOptions, type ListenNotification, type NotificationHandler, type ListenerEvents } from './postgres/listener.js';
export type { DisconnectedEvent, ReconnectedEvent, ListenStats, ListenState } from './postgres/listen-session.js';
export type { Diagnosis, DiagnosisFacts, LossCause } from './diagnostics/diagnose.js';
export type { ServerSettings } from './diagnostics/server-settings.js';
export type { Logger } from './diagnostics/logger.js';
export {
  createPrometheusCollector,
  type PrometheusOptions,
  type PromClientLike,
  type PromRegistryLike,
} from './metrics/prometheus.js';
export { registerOpenTelemetryMetrics, type OpenTelemetryOptions, type OtelMeterLike } from './metrics/opentelemetry.js';
export type { MetricsHandle, MetricsPool } from './metrics/names.js';
export { pgBossDb, type PgBossDatabase, type PgBossListenHandle, type PgBossTransaction } from './integrations/pg-boss.js';
export { mikroOrmDriver, type KyselyDialectClass, type MikroOrmDriverOptions } from './integrations/mikro-orm.js';
export { Client, type ClientOptions } from './client.js';
export { HostsUnreachableError, type HostFailure } from './postgres/client-hosts.js';
export { sequelizeRetryMatch } from './integrations/sequelize.js';
