// Passwords from a provider function (IAM tokens, rotated secrets): cached per host until shortly
// before they expire, fetched once per host however many connections open at the same moment.
import { CredentialProviderError, sqlStateOf } from '../errors.js';

/** The connection a password is asked for: RDS IAM and Entra ID tokens are signed for one host. */
export interface CredentialTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string | undefined;
  readonly database: string | undefined;
}

/** A password that stops working at `expiresAt` (a Date or epoch milliseconds). */
export interface ExpiringPassword {
  readonly password: string;
  readonly expiresAt: Date | number;
}

/** What a provider returns: a plain string (no expiry) or a password with its expiry. */
export type PasswordResult = string | ExpiringPassword;

/** The `password` option in its function form. pg's own `() => string` fits it too. */
export type PasswordProvider = (target: CredentialTarget) => PasswordResult | Promise<PasswordResult>;

/** A password handed to one connect attempt, with the version that attempt used. */
export interface Credential {
  readonly password: string;
  readonly version: number;
}

interface Entry extends Credential {
  readonly refreshAt: number;
}

// A token is replaced this long before it expires, or a quarter of its life before, if shorter.
const REFRESH_AHEAD_MILLIS = 60_000;

/**
 * The pool's cache of provider passwords, keyed by `host:port`. Its fields are private, so neither
 * `util.inspect` nor a spread shows a secret.
 */
export class CredentialCache {
  /** The provider's name, for errors. */
  readonly providerName: string;
  readonly #provider: PasswordProvider;
  readonly #timeoutMillis: number;
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Map<string, Promise<Entry>>();
  #version = 0;

  /** `timeoutMillis`: how long one provider call may take before the open fails. */
  constructor(provider: PasswordProvider, timeoutMillis: number) {
    this.#provider = provider;
    this.providerName = provider.name === '' ? 'password' : provider.name;
    this.#timeoutMillis = timeoutMillis;
  }

  /** The cached password for `target`, or a fresh one when none is cached or it is due for refresh. */
  get(key: string, target: CredentialTarget): Promise<Credential> {
    const entry = this.#entries.get(key);
    if (entry !== undefined && Date.now() < entry.refreshAt) return Promise.resolve(entry);
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = this.#fetch(target).then(
        (fresh) => {
          this.#pending.delete(key);
          this.#entries.set(key, fresh);
          return fresh;
        },
        (error: unknown) => {
          this.#pending.delete(key);
          throw error;
        },
      );
      this.#pending.set(key, pending);
    }
    return pending;
  }

  /**
   * Drops the cached password if it is still the one (`version`) the server refused, so the next
   * `get` asks the provider again; a newer one, fetched by another connection meanwhile, stays.
   */
  invalidate(key: string, version: number): void {
    if (this.#entries.get(key)?.version === version) this.#entries.delete(key);
  }

  async #fetch(target: CredentialTarget): Promise<Entry> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CredentialProviderError(this.providerName, `no answer within ${this.#timeoutMillis} ms`)), this.#timeoutMillis);
      timer.unref();
    });
    try {
      const result = await Promise.race([Promise.resolve().then(() => this.#provider({ ...target })), timeout]);
      return this.#entry(result);
    } catch (error) {
      throw error instanceof CredentialProviderError ? error : new CredentialProviderError(this.providerName, error);
    } finally {
      clearTimeout(timer);
    }
  }

  #entry(result: unknown): Entry {
    const version = ++this.#version;
    if (typeof result === 'string') return { password: result, version, refreshAt: Infinity };
    const r = result as Partial<ExpiringPassword> | null;
    const expiresAt = r?.expiresAt instanceof Date ? r.expiresAt.getTime() : r?.expiresAt;
    // Never echo the result: it holds the secret.
    if (typeof r?.password !== 'string' || typeof expiresAt !== 'number' || Number.isNaN(expiresAt)) {
      throw new CredentialProviderError(this.providerName, 'it returned neither a string nor { password, expiresAt }');
    }
    const life = Math.max(0, expiresAt - Date.now());
    return { password: r.password, version, refreshAt: expiresAt - Math.min(REFRESH_AHEAD_MILLIS, life / 4) };
  }
}

/** True when a failed open is worth one retry with a fresh password: 28P01, 28000, or an expired token. */
export function isAuthFailure(error: unknown): boolean {
  const state = sqlStateOf(error);
  if (state === '28P01' || state === '28000') return true;
  return error instanceof Error && /token.{0,40}expired|expired.{0,20}token/i.test(error.message);
}
