// Fetches the Node.js releases the package is tested on, besides the one running the tests, into
// .pg-lifeline-cache/node/<version>/ (idempotent). They come from npm's registry (node-<os>-<arch>),
// so no other network access is needed. test/integrations/packaging.test.ts runs the packed
// package on each one found there.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The newest release of each supported major line other than 20 (which runs the whole suite). */
export const NODE_VERSIONS: readonly string[] = ['22.23.3', '24.21.0', '26.10.0'];

const root = fileURLToPath(new URL('..', import.meta.url));
const nodeCache = path.join(root, '.pg-lifeline-cache', 'node');

/** Where the `node` binary of `version` is (or will be) kept. */
export function nodeBinary(version: string): string {
  return path.join(nodeCache, version, 'bin', 'node');
}

/** Puts `version`'s `node` binary in the cache unless it is there; says which it did. */
export function fetchNode(version: string): string {
  const target = nodeBinary(version);
  if (existsSync(target)) return `node ${version}: present`;
  const spec = `node-${process.platform}-${os.arch()}@${version}`;
  const work = mkdtempSync(path.join(os.tmpdir(), 'pg-lifeline-node-'));
  try {
    const [packed] = JSON.parse(execFileSync('npm', ['pack', spec, '--json', '--pack-destination', work], { cwd: work, encoding: 'utf8' })) as Array<{ filename: string }>;
    if (packed === undefined) throw new Error(`npm pack ${spec} reported no package`);
    execFileSync('tar', ['xzf', path.join(work, packed.filename), '-C', work, 'package/bin/node']);
    mkdirSync(path.dirname(target), { recursive: true });
    renameSync(path.join(work, 'package', 'bin', 'node'), target);
    return `node ${version}: fetched ${spec}`;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const version of NODE_VERSIONS) console.log(fetchNode(version));
}
