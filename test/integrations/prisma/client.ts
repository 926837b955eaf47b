// Generates the Prisma client for schema.prisma into ./generated (gitignored) and loads it.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { PrismaPg } from '@prisma/adapter-pg';

/** A row of the accounts table, as Prisma returns it. */
interface Account {
  id: number;
  owner: string;
  balance: number;
}

/**
 * The part of the generated client's API the tests use. The generated types cannot be imported:
 * on a clean clone the type-check runs before any test has generated them.
 */
interface AccountDelegate {
  create(args: { data: { owner: string; balance: number } }): Promise<Account>;
  findMany(args: { where: { owner: string }; orderBy: { id: 'asc' } }): Promise<Account[]>;
  update(args: { where: { id: number }; data: { balance: { increment: number } } }): Promise<Account>;
  count(args: { where: { owner: string } }): Promise<number>;
}

/** What an interactive transaction's callback gets. */
interface PrismaTx {
  readonly account: AccountDelegate;
  $queryRaw<T>(query: TemplateStringsArray, ...values: unknown[]): Promise<T>;
}

/** A generated client's instance. */
export interface Prisma extends PrismaTx {
  $transaction<T>(fn: (tx: PrismaTx) => Promise<T>): Promise<T>;
  $transaction<P extends readonly Promise<unknown>[]>(batch: readonly [...P]): Promise<{ -readonly [K in keyof P]: Awaited<P[K]> }>;
  $disconnect(): Promise<void>;
}

export type PrismaClientClass = new (options: { adapter: PrismaPg }) => Prisma;

const schema = fileURLToPath(new URL('./schema.prisma', import.meta.url));
const cli = createRequire(import.meta.url).resolve('prisma/build/index.js');
// `generate` only checks that the schema engine's path exists; without one it would try to
// download the engine, and fail offline. It never runs it: a stand-in that exits 1 is enough.
const noEngine = existsSync('/bin/false') ? '/bin/false' : '/usr/bin/false';

/** Regenerates the client (so it always matches schema.prisma) and imports it. */
export async function generatePrismaClient(): Promise<PrismaClientClass> {
  await promisify(execFile)(process.execPath, [cli, 'generate', '--schema', schema], {
    env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: noEngine, CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1' },
  });
  // A computed specifier, so the type-check does not look for a file that may not exist yet.
  const generated = new URL('./generated/client.js', import.meta.url).href;
  const module = (await import(generated)) as { PrismaClient: PrismaClientClass };
  return module.PrismaClient;
}
