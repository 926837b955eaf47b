// Host choice for pg-lifeline's Client. A pg client connects once, to one server, so the hosts are
// tried with short-lived probe clients first; the Client then connects to the one that fitted.
import * as pg from 'pg';
import { LifelineError, NoMatchingHostError } from '../errors.js';
import { errorText } from '../pg-error.js';
import { isPermanentConnectError } from './classify.js';
import { readRole, roleMatches } from './host-router.js';
import type { HostSettings, HostTarget } from './hosts.js';

/** One host's failure, as {@link HostsUnreachableError} lists it. */
export interface HostFailure {
  /** `host:port`. */
  readonly host: string;
  readonly error: unknown;
}

/**
 * Every host of a multi-host Client failed to connect. The message lists each host with its
 * error; the last error's code and message lead, so a check for ECONNREFUSED or 57P03 still holds.
 */
export class HostsUnreachableError extends LifelineError {
  readonly failures: readonly HostFailure[];

  constructor(failures: readonly HostFailure[]) {
    const last = failures.at(-1)?.error;
    super(
      'PGL_HOSTS_UNREACHABLE',
      `No host could be connected to: ${failures.map((f) => `${f.host}: ${errorText(f.error)}`).join('; ')}. ` +
        'Check that the servers are running and reachable; the next connection tries every host again.',
      { cause: last, pg: last },
    );
    this.failures = failures;
  }
}

/**
 * The first host that accepts a login and has the role `target_session_attrs` asks for (on a
 * prefer-* setting, the first that answered when none is preferred). A permanent refusal (a bad
 * password, an unknown database) ends the search: every host would refuse it alike.
 * `options(target)` gives a probe client's options for a host, password included.
 */
export async function chooseHost(settings: HostSettings, options: (target: HostTarget) => pg.ClientConfig): Promise<HostTarget> {
  const failures: HostFailure[] = [];
  let fallback: HostTarget | undefined;
  let answered = 0;
  for (const target of settings.targets) {
    const probe = new pg.Client(options(target));
    // A probe's socket may fail after its answer; nothing must reach the process from it.
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      answered++;
      if (settings.targetSessionAttrs === 'any') return target;
      const role = await readRole(probe);
      if (roleMatches(settings.targetSessionAttrs, role, true)) return target;
      if (fallback === undefined && roleMatches(settings.targetSessionAttrs, role, false)) fallback = target;
    } catch (error) {
      if (isPermanentConnectError(error)) throw error;
      failures.push({ host: target.key, error });
    } finally {
      await probe.end().catch(() => undefined);
    }
  }
  if (fallback !== undefined) return fallback;
  if (answered > 0) throw new NoMatchingHostError(settings.targetSessionAttrs, settings.targets);
  throw new HostsUnreachableError(failures);
}
