// Runs the given test files on Node.js 22, for integrations whose libraries no longer run on 20
// (kysely 0.29 needs 22). On 22 or later it is this Node.js; on 20, the 22 binary that
// scripts/node-versions.ts keeps (fetched from npm's registry when missing).
import { spawnSync } from 'node:child_process';
import { fetchNode, NODE_VERSIONS, nodeBinary } from './node-versions.js';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: tsx scripts/test-on-node22.ts <test files>');
  process.exit(2);
}
let node = process.execPath;
if (Number(process.versions.node.split('.')[0]) < 22) {
  const version = NODE_VERSIONS.find((v) => v.startsWith('22.'));
  if (version === undefined) throw new Error('scripts/node-versions.ts lists no Node.js 22 release');
  console.log(fetchNode(version));
  node = nodeBinary(version);
}
const run = spawnSync(node, ['--import', 'tsx', '--test', ...files], { stdio: 'inherit' });
process.exit(run.status ?? 1);
