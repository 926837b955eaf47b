// Where an example's database comes from: DATABASE_URL when it is set, otherwise a throwaway
// PostgreSQL from this repository's own facility (src/throwaway), on a random port of 127.0.0.1,
// stopped and deleted when the example is done. Copying an example into your own project? Drop
// this file and read process.env.DATABASE_URL instead.
import { PgCluster } from '../src/throwaway/cluster.js';
import { selfCheck, watchdog } from './self-check.js';

export interface ExampleDatabase {
  readonly url: string;
  /** Stops and deletes the throwaway server; nothing to do for DATABASE_URL. */
  close(): Promise<void>;
}

export async function openDatabase(): Promise<ExampleDatabase> {
  const url = process.env['DATABASE_URL'];
  if (url) {
    console.log(`database: DATABASE_URL (${url.replace(/:[^:@/]*@/, ':***@')})`);
    return { url, close: async () => undefined };
  }
  // The facility also stops the server if the process exits or is signalled before close().
  const cluster = await PgCluster.start();
  console.log(`database: throwaway PostgreSQL at ${cluster.connectionString()}`);
  return { url: cluster.connectionString(), close: () => cluster.destroy() };
}

/** Runs `main` on the example's database, then closes it. A self-check gets 45 s at most. */
export async function runExample(main: (url: string) => Promise<void>): Promise<void> {
  if (selfCheck) watchdog(45_000);
  const database = await openDatabase();
  try {
    await main(database.url);
  } finally {
    await database.close();
  }
}
