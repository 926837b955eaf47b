import * as pg from 'pg';
import { defaultAttemptMillis, int, passwordOf } from './config.js';
import { diagnose, type Diagnosis } from './diagnostics/diagnose.js';
import { ConfigError, ConnectFailedError, ConnectionLostError, LifelineError, NoMatchingHostError, OutcomeUnknownError } from './errors.js';
import { classifyFailure, isConnectionError, isPermanentConnectError, outcomeOf } from './postgres/classify.js';
import { chooseHost } from './postgres/client-hosts.js';
import { unwatchSilence, watchSilence } from './postgres/client-watch.js';
import { CredentialCache, isAuthFailure, type PasswordProvider } from './postgres/credentials.js';
import { readRole, roleMatches, shuffled } from './postgres/host-router.js';
import { resolveHosts, type HostSettings, type HostTarget, type TargetSessionAttrs } from './postgres/hosts.js';
import { retarget } from './postgres/internals.js';
import type { SilentConnectionError } from './postgres/silence.js';

/**
 * Options of `new Client(options)`: every pg.Client option with pg's meaning, plus the parts of
 * pg-lifeline that live in one connection. Defaults that differ from pg's: `keepAlive` true with
 * `keepAliveInitialDelayMillis` 30000 (the Pool's), and `connectionTimeoutMillis` 30000.
 */
export interface ClientOptions extends Omit<pg.ClientConfig, 'password'> {
  /**
   * The password, or a provider function called with `{ host, port, user, database }` and returning
   * a string or `{ password, expiresAt }`. Clients given the same function share one cache of its
   * results; a password the server refuses is dropped from it, so the next client asks again.
   */
  password?: string | PasswordProvider | undefined;
  /** Servers to try in order. `host: 'h1,h2'` and multi-host connection strings work too. */
  hosts?: readonly { readonly host: string; readonly port?: number | undefined }[] | undefined;
  /** The role the server must have, as libpq's `target_session_attrs` (also read from the connection string). Default 'any'. */
  targetSessionAttrs?: TargetSessionAttrs | undefined;
  /** 'random' shuffles the hosts for each connection, as libpq's `load_balance_hosts`. Default 'disable'. */
  loadBalanceHosts?: 'random' | 'disable' | undefined;
  /**
   * A statement that has received nothing for this long is checked from a separate connection; if
   * the server cannot be reached, or has no such backend, the connection is cut and the statement
   * fails. 0 turns this off. Default 2000.
   */
  monitorGraceMillis?: number | undefined;
  /** How long that check may take before the server counts as unreachable. Default 10000. */
  monitorDetectionMillis?: number | undefined;
}

/** What pg-lifeline keeps about one Client, outside pg's object. */
interface ClientRecord {
  readonly hosts: HostSettings;
  target: HostTarget;
  readonly password: string | PasswordProvider | undefined;
  readonly credentials: CredentialCache | undefined;
  credentialVersion: number | undefined;
  readonly connectTimeoutMillis: number;
  readonly keepAlive: { keepAlive: boolean; keepAliveInitialDelayMillis: number };
  readonly graceMillis: number;
  readonly detectionMillis: number;
  user: string | undefined;
  database: string | undefined;
  openedAt: number;
  lastActiveAt: number;
  idleBeforeQuery: number;
  busy: number;
  /** connect() was called: a second call goes straight to pg, which refuses it. */
  connecting: boolean;
  silence: SilentConnectionError | undefined;
  /** The error pg emitted when the connection died, which explains a later "not queryable" best. */
  death: Error | undefined;
  /** Set once a statement met the connection's end: later ones are refused before they are sent. */
  dead: Diagnosis | undefined;
}

const records = new WeakMap<object, ClientRecord>();
// One cache per provider function, so every client built with it shares the provider's tokens.
const caches = new WeakMap<PasswordProvider, CredentialCache>();
const CONNECT_TIMEOUT_MILLIS = 30_000;
const MAX_TIMER = 2_147_483_647;
const OWN_OPTIONS = ['hosts', 'targetSessionAttrs', 'loadBalanceHosts', 'monitorGraceMillis', 'monitorDetectionMillis'];

type Callback = (err: Error | null, result?: unknown) => void;

/**
 * A pg.Client with the parts of pg-lifeline that live in one connection: TCP keepalive on by
 * default, a time limit on connecting, password providers, multi-host routing with
 * `target_session_attrs`, a watch that ends a statement on a dead network, and connection errors
 * explained (`ConnectionLostError` / `OutcomeUnknownError`, keeping pg's code and message). For
 * libraries that build their own clients (Sequelize's `dialectModule` / `pgModule`). It does not
 * retry, validate or replace connections: that is the Pool's work.
 */
export class Client extends pg.Client {
  constructor(config?: string | ClientOptions) {
    const [pgConfig, record] = prepare(typeof config === 'string' ? { connectionString: config } : (config ?? {}));
    super(pgConfig);
    record.user = this.user;
    record.database = this.database;
    records.set(this, record);
  }

  /**
   * A subclass whose clients start from `defaults`: for libraries that pass only some options
   * through to the client. Options given to the constructor win, except those left undefined.
   */
  static configure(defaults: ClientOptions): typeof Client {
    return class ConfiguredClient extends this {
      constructor(config?: string | ClientOptions) {
        const given = typeof config === 'string' ? { connectionString: config } : (config ?? {});
        const defined = Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined));
        super({ ...defaults, ...defined });
      }
    };
  }

  /** pg's own events, unchanged; the error of a dying connection is kept to explain the statements that follow. */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const record = records.get(this);
    if (event === 'error' && record !== undefined && args[0] instanceof Error) record.death ??= args[0];
    return super.emit(event, ...args);
  }

  /** Connects to the first host that answers and fits `targetSessionAttrs`. */
  override connect(): Promise<this>;
  override connect(callback: (err: Error) => void): void;
  override connect(callback?: (err: Error) => void): Promise<this> | void {
    const opening = open(this, recordOf(this), () => super.connect()).then(() => this);
    if (callback === undefined) return opening;
    opening.then(() => callback(null as unknown as Error), callback);
  }
}

const pgQuery = pg.Client.prototype.query as (this: pg.Client, ...args: unknown[]) => unknown;

/**
 * pg's query, with connection failures explained; a Submittable (cursor, stream) is passed through
 * as is. Set on the prototype, not declared in the class, so `Client#query` keeps pg's typed overloads.
 */
function query(this: Client, ...args: unknown[]): unknown {
  const record = recordOf(this);
  const first = args[0] as { submit?: unknown; callback?: unknown } | null | undefined;
  if (typeof first?.submit === 'function') return pgQuery.apply(this, args);
  const last = args.at(-1);
  // pg takes the callback last, or as the config's `callback` field.
  const callback = typeof last === 'function' ? (last as Callback) : typeof first?.callback === 'function' ? (first.callback as Callback) : undefined;
  if (record.dead !== undefined) return refuse(record.dead, callback);
  started(this, record);
  if (callback !== undefined) {
    const answered: Callback = (err, result) => {
      finished(this, record);
      callback(err === null || err === undefined ? err : (explain(record, err) as Error), result);
    };
    if (typeof last === 'function') args[args.length - 1] = answered;
    else args[0] = { ...first, callback: answered };
  }
  let running: unknown;
  try {
    running = pgQuery.apply(this, args);
  } catch (error) {
    // Thrown before anything was queued (bad arguments): nothing is in flight.
    finished(this, record);
    throw error;
  }
  if (callback !== undefined) return running;
  return (running as Promise<unknown>).then(
    (result) => {
      finished(this, record);
      return result;
    },
    (error: unknown) => {
      finished(this, record);
      throw explain(record, error);
    },
  );
}

Object.defineProperty(Client.prototype, 'query', { value: query, writable: true, configurable: true });

function recordOf(client: object): ClientRecord {
  const record = records.get(client);
  if (record === undefined) throw new Error('pg-lifeline Client used before its constructor finished');
  return record;
}

function prepare(options: ClientOptions): [pg.ClientConfig, ClientRecord] {
  if (typeof options !== 'object' || options === null) throw new ConfigError('options', 'an object or a connection string', options);
  const password = passwordOf(options.password);
  const hosts = resolveHosts(options as ClientOptions & Record<string, unknown>);
  const connectTimeoutMillis = int('connectionTimeoutMillis', options.connectionTimeoutMillis, CONNECT_TIMEOUT_MILLIS, 0, MAX_TIMER);
  const keepAlive = options.keepAlive ?? true;
  let credentials: CredentialCache | undefined;
  if (typeof password === 'function') {
    credentials = caches.get(password) ?? new CredentialCache(password, Math.max(1, Math.floor((connectTimeoutMillis || CONNECT_TIMEOUT_MILLIS) / 2)));
    caches.set(password, credentials);
  }
  const record: ClientRecord = {
    hosts,
    target: hosts.targets[0] as HostTarget,
    password: hosts.password ?? password ?? undefined,
    credentials,
    credentialVersion: undefined,
    connectTimeoutMillis,
    keepAlive: { keepAlive, keepAliveInitialDelayMillis: options.keepAliveInitialDelayMillis ?? (keepAlive ? 30_000 : 0) },
    graceMillis: int('monitorGraceMillis', options.monitorGraceMillis, 2000, 0, MAX_TIMER),
    detectionMillis: int('monitorDetectionMillis', options.monitorDetectionMillis, 10_000, 1, MAX_TIMER),
    user: undefined,
    database: undefined,
    openedAt: Date.now(),
    lastActiveAt: Date.now(),
    idleBeforeQuery: 0,
    busy: 0,
    connecting: false,
    silence: undefined,
    death: undefined,
    dead: undefined,
  };
  return [clientConfig(record, record.target, true), record];
}

/**
 * What a pg client for `target` is built with. `main` is the Client itself (it tracks the password
 * version); the others are probes and checks, bound like one of the Pool's connect attempts, so a
 * silent host in a list does not hold up the next one for the whole connect bound.
 */
function clientConfig(record: ClientRecord, target: HostTarget, main: boolean): pg.ClientConfig {
  const config: Record<string, unknown> = { ...target.clientOptions, ...record.keepAlive, connectionTimeoutMillis: main ? record.connectTimeoutMillis : defaultAttemptMillis(record.connectTimeoutMillis) };
  for (const option of OWN_OPTIONS) delete config[option];
  // A stream or connection given to the Client is its own: a probe or check opens a socket of its own.
  if (!main) for (const option of ['stream', 'connection']) delete config[option];
  const credentials = record.credentials;
  if (credentials !== undefined) {
    // The main client reads its target when pg asks: the host it is connecting to is chosen late.
    config['password'] = async () => {
      const to = main ? record.target : target;
      const credential = await credentials.get(to.key, { host: to.host, port: to.port, user: record.user, database: record.database });
      if (main) record.credentialVersion = credential.version;
      return credential.password;
    };
  } else if (typeof record.password === 'string') config['password'] = record.password;
  return config as pg.ClientConfig;
}

async function open(client: Client, record: ClientRecord, connect: () => Promise<unknown>): Promise<void> {
  if (record.connecting) return void (await connect());
  record.connecting = true;
  const attrs = record.hosts.targetSessionAttrs;
  try {
    if (record.hosts.targets.length > 1) {
      const targets = record.hosts.loadBalanceHosts ? shuffled(record.hosts.targets) : record.hosts.targets;
      record.target = await chooseHost({ ...record.hosts, targets }, (target) => clientConfig(record, target, false));
      retarget(client, record.target.host, record.target.port);
    }
    await connect();
  } catch (error) {
    if (record.credentials !== undefined && record.credentialVersion !== undefined && isAuthFailure(error)) record.credentials.invalidate(record.target.key, record.credentialVersion);
    throw isPermanentConnectError(error) && !(error instanceof LifelineError) ? new ConnectFailedError(error, 'Retrying will not help: check the user, password, database name and TLS settings.') : error;
  }
  // Checked again on the connection itself: the role may have changed since the probe.
  if (attrs !== 'any' && !roleMatches(attrs, await readRole(client), false)) {
    await client.end().catch(() => undefined);
    throw new NoMatchingHostError(attrs, [record.target]);
  }
  record.openedAt = Date.now();
  record.lastActiveAt = record.openedAt;
}

function started(client: Client, record: ClientRecord): void {
  if (record.busy++ > 0) return;
  record.idleBeforeQuery = Date.now() - record.lastActiveAt;
  const target = record.target;
  const settings = { graceMillis: record.graceMillis, detectionMillis: record.detectionMillis, probeOptions: () => clientConfig(record, target, false), host: target.key };
  watchSilence(client, settings, (error) => (record.silence ??= error));
}

function finished(client: Client, record: ClientRecord): void {
  record.lastActiveAt = Date.now();
  if (--record.busy === 0) unwatchSilence(client);
}

/** A connection failure as a typed, diagnosed error (pg's code and message lead); any other error as pg gave it. */
function explain(record: ClientRecord, error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof LifelineError || !isConnectionError(error)) return error;
  const cause = record.silence ?? record.death ?? error;
  const diagnosis = diagnose(cause, { ageMillis: Date.now() - record.openedAt, idleMillis: record.idleBeforeQuery, host: record.target.key });
  // pg learns of the death a moment later (the socket's end): until then the owner's pool may hand the client out again.
  if (classifyFailure(error) !== 'query-timeout') record.dead ??= diagnosis;
  // The Client cannot tell whether a statement it handed to the socket ran, except where pg or the server says it did not.
  return outcomeOf(error, true) === 'unknown' ? new OutcomeUnknownError(cause, diagnosis, error) : new ConnectionLostError(cause, diagnosis, undefined, error);
}

// pg's own words for a client it will not use, so the refusal is read as "not sent" everywhere.
const NOT_QUERYABLE = 'Client has encountered a connection error and is not queryable';

/** A statement on a client already known dead: refused unsent, so it is safe to run elsewhere. */
function refuse(diagnosis: Diagnosis, callback: Callback | undefined): Promise<never> | undefined {
  const error = new ConnectionLostError(new Error(NOT_QUERYABLE), diagnosis);
  if (callback === undefined) return Promise.reject(error);
  process.nextTick(() => callback(error));
  return undefined;
}
