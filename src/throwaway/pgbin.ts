// Where the PostgreSQL server binaries are, how to run them as the right user, and the cached
// initdb template that every PgCluster copies.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { findServerBinaries } from './binaries.js';

const execFileAsync = promisify(execFile);

/** Part of the cached template's name: bump it whenever the initdb arguments change. */
const TEMPLATE_FORMAT = 3;

// PostgreSQL refuses to run as root, so a root runner drives the server as the `postgres` OS user.
const isRoot = process.getuid?.() === 0;

export interface Owner {
  uid: number;
  gid: number;
}

let ownerPromise: Promise<Owner | null> | undefined;
export function postgresOwner(): Promise<Owner | null> {
  ownerPromise ??= (async () => {
    if (!isRoot) return null;
    const id = async (flag: string) => Number((await execFileAsync('id', [flag, 'postgres'])).stdout.trim());
    return { uid: await id('-u'), gid: await id('-g') };
  })();
  return ownerPromise;
}

/** Throws ServerBinariesNotFoundError when there are none; the lookup runs once per process. */
function binDir(): string {
  return findServerBinaries().dir;
}

/** Command line for a PostgreSQL tool, run as the `postgres` OS user when we are root. */
export function toolCommand(tool: string, args: string[]): [string, string[]] {
  const bin = path.join(binDir(), tool);
  return isRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
}

export async function runTool(tool: string, args: string[], input?: string): Promise<string> {
  const [cmd, argv] = toolCommand(tool, args);
  // cwd: the postgres user may not be allowed into the runner's working directory.
  const running = execFileAsync(cmd, argv, { cwd: os.tmpdir(), maxBuffer: 16 * 1024 * 1024 });
  if (input !== undefined) running.child.stdin?.end(input);
  return (await running).stdout;
}

/** The superuser's password in every throwaway server: they listen on 127.0.0.1 only and hold no data. */
export const HARNESS_PASSWORD = 'lifeline-test-pw';
/** A role whose password is stored as an md5 hash, for the md5 authentication path. */
export const MD5_ROLE = Object.freeze({ user: 'lifeline_md5', password: 'lifeline-md5-pw' });

async function ownedTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const owner = await postgresOwner();
  if (owner) await chown(dir, owner.uid, owner.gid);
  return dir;
}

let templatePromise: Promise<string> | undefined;
/**
 * initdb is the slow part of starting a cluster, so it runs once per machine into a cached template
 * that every cluster copies. It is built in a unique dir and renamed into place, so concurrent test
 * processes never see a half-written template.
 */
export function template(): Promise<string> {
  templatePromise ??= (async () => {
    const version = await runTool('postgres', ['--version']);
    const major = /\(PostgreSQL\) (\d+)/.exec(version)?.[1];
    if (!major) throw new Error(`Cannot parse PostgreSQL version from: ${version}`);
    const dir = path.join(os.tmpdir(), `pg-lifeline-template-${major}-${process.getuid?.() ?? 'x'}-v${TEMPLATE_FORMAT}`);
    if (existsSync(path.join(dir, 'PG_VERSION'))) return dir;

    const building = await ownedTempDir(`pg-lifeline-template-${major}.tmp-`);
    try {
      // Outside `building`: initdb wants an empty dir. Readable by the postgres user that runs initdb.
      const pwfile = `${building}.pwfile`;
      await writeFile(pwfile, `${HARNESS_PASSWORD}\n`, { mode: 0o644 });
      // 1 MB WAL segments instead of 16 MB: every cluster start copies this directory. Each cluster
      // writes its own pg_hba.conf, so initdb's -A only matters for the unix socket.
      await runTool('initdb', [
        '-D', building, '-A', 'trust', '-U', 'postgres', `--pwfile=${pwfile}`, '--no-sync', '-E', 'UTF8', '--locale=C', '--wal-segsize=1',
      ]);
      await rm(pwfile, { force: true });
      // Single-user mode: no server to start, and the role is in the template for every cluster.
      const escaped = MD5_ROLE.password.replace(/'/g, "''");
      await runTool('postgres', ['--single', '-D', building, 'postgres'],
        `SET password_encryption = 'md5';\nCREATE ROLE ${MD5_ROLE.user} LOGIN PASSWORD '${escaped}';\n`);
      await rename(building, dir);
    } catch (error) {
      await rm(building, { recursive: true, force: true });
      await rm(`${building}.pwfile`, { force: true });
      // Losing the rename race is fine: another process put a complete template in place.
      if (!existsSync(path.join(dir, 'PG_VERSION'))) throw error;
    }
    return dir;
  })();
  templatePromise.catch(() => (templatePromise = undefined));
  return templatePromise;
}

/**
 * Copies the template in-process rather than with `cp -a`: a cp child would outlive a killed test
 * process and keep writing into the data dir its exit hook removes. Only a few copies are in flight,
 * so the exit hook's rm never races a long queue of pending writes.
 */
export async function copyTree(from: string, to: string, owner: Owner | null): Promise<void> {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(path.join(from, dir), { withFileTypes: true })) {
      const name = path.join(dir, entry.name);
      if (!entry.isDirectory()) {
        files.push(name);
        continue;
      }
      await mkdir(path.join(to, name), { mode: 0o700 });
      if (owner) await chown(path.join(to, name), owner.uid, owner.gid);
      await walk(name);
    }
  };
  await walk('');
  const copyNext = async (): Promise<void> => {
    for (let name = files.pop(); name !== undefined; name = files.pop()) {
      await copyFile(path.join(from, name), path.join(to, name)); // keeps the mode bits
      if (owner) await chown(path.join(to, name), owner.uid, owner.gid);
    }
  };
  await Promise.all(Array.from({ length: 8 }, copyNext));
}
