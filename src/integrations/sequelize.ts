// Sequelize's `retry.match` over pg-lifeline's retry rules. Structural only: pg-lifeline does not
// depend on Sequelize. retry-as-promised calls a matcher that is an arrow function (one without a
// prototype, on which its `instanceof` test throws) with the error; a `function` would be read as
// an error class instead, and never match.
import { isSafeToRetry } from '../postgres/classify.js';

/** The part of a Sequelize error the matcher reads: the driver's error is on `original` or `parent`. */
interface WrappedError {
  readonly original?: unknown;
  readonly parent?: unknown;
}

/**
 * For Sequelize's `retry: { max, match: [sequelizeRetryMatch] }`: true only when pg-lifeline's
 * `isSafeToRetry` says the driver's error certainly did not take effect (a refused or failed
 * connect, a server that was starting up or full, a connection already dead before the statement
 * was sent). Never for a statement that may have run (`OutcomeUnknownError`, a connection lost
 * mid-statement), nor for an SQL error such as a unique violation. Serialization failures and
 * deadlocks are not matched either: Sequelize would re-run one statement, not its transaction.
 */
export const sequelizeRetryMatch = (error: unknown): boolean => {
  const wrapped = error as WrappedError | null | undefined;
  const original = wrapped?.original ?? wrapped?.parent ?? error;
  return isSafeToRetry(original, { sent: true, idempotent: false });
};
