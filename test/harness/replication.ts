// A primary and an asynchronous streaming hot standby on localhost, each a full PgCluster.
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { PgCluster } from './cluster.js';
import type { ClusterOptions } from './cluster.js';
import { runTool } from './pgbin.js';
import { waitFor } from './wait.js';

export interface ReplicaSetOptions {
  /** Extra postgresql.conf lines for both servers (the standby inherits the primary's file). */
  settings?: Record<string, string | number | boolean>;
}

const REPLICATION_TIMEOUT_MS = 15_000;

/** Removes what pg_basebackup copied but belongs to the primary's running instance. */
async function dropPrimaryLeftovers(dataDir: string): Promise<void> {
  for (const name of await readdir(dataDir)) {
    // The primary's server.log and socket lock files (its socket dir is its data dir).
    if (name === 'server.log' || name.startsWith('.s.PGSQL.')) await rm(path.join(dataDir, name), { force: true });
  }
}

export class ReplicaSet {
  /** The original primary. */
  readonly primary: PgCluster;
  /** A hot standby made with pg_basebackup -R from the primary, on its own port. */
  readonly standby: PgCluster;
  #destroying: Promise<void> | undefined;

  private constructor(primary: PgCluster, standby: PgCluster) {
    this.primary = primary;
    this.standby = standby;
  }

  static async start(options: ReplicaSetOptions = {}): Promise<ReplicaSet> {
    const primaryOptions: ClusterOptions = {
      settings: {
        wal_level: 'replica',
        max_wal_senders: 5,
        hot_standby: true,
        // No slot: keep enough WAL (1 MB segments) that a briefly stopped standby can catch up.
        wal_keep_size: '64MB',
        ...options.settings,
      },
      hba: ['host replication all 127.0.0.1/32 trust'],
    };
    const primary = await PgCluster.start(primaryOptions);
    let standby: PgCluster;
    try {
      standby = await PgCluster.startFromDataDir(async (dataDir) => {
        // -R writes standby.signal and primary_conninfo (to postgresql.auto.conf, which the harness
        // never rewrites). --no-sync: throwaway data, like initdb --no-sync for the template.
        await runTool('pg_basebackup', [
          '-h', primary.host, '-p', String(primary.port), '-U', primary.user,
          '-D', dataDir, '-R', '-X', 'stream', '-c', 'fast', '--no-sync',
        ]);
        await dropPrimaryLeftovers(dataDir);
      }, { settings: { hot_standby: true, ...options.settings } });
    } catch (error) {
      await primary.destroy();
      throw error;
    }
    const set = new ReplicaSet(primary, standby);
    try {
      // pg_ctl start -w returns once the standby accepts read-only connections; also wait until it
      // streams, so replication is really running before any test relies on it.
      await waitFor(
        'the standby to stream from the primary',
        async () => {
          const rows = await standby.query<{ status: string }>('SELECT status FROM pg_stat_wal_receiver');
          return rows[0]?.status === 'streaming';
        },
        { timeoutMs: REPLICATION_TIMEOUT_MS },
      );
    } catch (error) {
      await set.destroy();
      throw error;
    }
    return set;
  }

  /** pg_ctl promote -w on the standby; resolves when it accepts writes (pg_is_in_recovery() false). */
  async promoteStandby(): Promise<void> {
    await runTool('pg_ctl', ['promote', '-D', this.standby.dataDir, '-w', '-t', '30']);
    await waitFor(
      'the promoted standby to leave recovery',
      async () => {
        const rows = await this.standby.query<{ recovery: boolean }>('SELECT pg_is_in_recovery() AS recovery');
        return rows[0]?.recovery === false;
      },
      { timeoutMs: REPLICATION_TIMEOUT_MS },
    );
  }

  stopPrimary(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    return this.primary.stop(mode);
  }

  /**
   * Waits until the standby has replayed all WAL the primary has generated so far. The target is
   * pg_current_wal_insert_lsn(), not pg_current_wal_lsn(): the harness runs with
   * synchronous_commit=off, so a commit that already returned may not be written yet, and the write
   * position would not cover it. The WAL writer flushes it within a few wal_writer_delay periods.
   */
  async waitForReplay(): Promise<void> {
    const [target] = await this.primary.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
    if (!target) throw new Error('The primary reported no WAL position');
    await waitFor(
      `the standby to replay up to ${target.lsn}`,
      async () => {
        const rows = await this.standby.query<{ caught_up: boolean | null }>(
          'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS caught_up',
          [target.lsn],
        );
        return rows[0]?.caught_up === true;
      },
      { timeoutMs: REPLICATION_TIMEOUT_MS },
    );
  }

  /** Stops both servers and removes both data dirs; idempotent. */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      // Standby first, so it does not log a stream of reconnect attempts into a dying primary.
      const results = [await this.standby.destroy().then(() => null, (error: unknown) => error)];
      results.push(await this.primary.destroy().then(() => null, (error: unknown) => error));
      const failed = results.find((error) => error !== null);
      if (failed) throw failed;
    })();
    this.#destroying.catch(() => (this.#destroying = undefined));
    return this.#destroying;
  }
}
