// The `pg-lifeline` command line. Each command is one entry of COMMANDS; built into dist/cli.cjs.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { DEMO_USAGE, runDemo } from './demo/index.js';
import { DOCTOR_USAGE, runDoctor, UsageError } from './doctor/index.js';

interface Command {
  /** One line for the command list. */
  summary: string;
  usage: string;
  /** Runs with the arguments after the command name; resolves to the exit code. Throws UsageError for bad ones. */
  run: (args: string[]) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  demo: {
    summary: 'pg.Pool and pg-lifeline side by side under real faults (kills, restart, crash, blackhole); writes an HTML report',
    usage: DEMO_USAGE,
    run: runDemo,
  },
  doctor: {
    summary: 'check a server (reachability, login, TLS, timeouts, proxy, headroom, restarts) against your pool settings',
    usage: DOCTOR_USAGE,
    run: runDoctor,
  },
};

function usage(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    'Usage: pg-lifeline <command> [options]',
    '',
    'Commands:',
    ...names.map((name) => `  ${name.padEnd(width)}${COMMANDS[name]?.summary ?? ''}`),
    '',
    'Options:',
    '  -h, --help     show this help (pg-lifeline <command> --help for a command)',
    '  -v, --version  print the version',
    '',
  ].join('\n');
}

/** The version in the package.json above this script (dist/cli.cjs or src/cli.ts alike). */
function version(): string {
  let dir = path.dirname(realpathSync(process.argv[1] ?? '.'));
  for (let up = 0; up < 4; up++, dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'pg-lifeline' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '-h' || first === '--help') {
    process.stdout.write(usage());
    return 0;
  }
  if (first === '-v' || first === '--version') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = first !== undefined && Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined;
  if (!command || first === undefined) {
    const problem = first === undefined ? 'missing command' : first.startsWith('-') ? `unknown option ${first}` : `unknown command ${JSON.stringify(first)}`;
    process.stderr.write(`pg-lifeline: ${problem}\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const more = error.showUsage ? `\n${command.usage}` : `(see pg-lifeline ${first} --help)\n`;
    process.stderr.write(`pg-lifeline ${first}: ${error.message}\n${more}`);
    return 2;
  }
}

/** Exits once both streams have flushed, so nothing a check left open can keep the process alive. */
function exit(code: number): void {
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

main(process.argv.slice(2)).then(exit, (error: unknown) => {
  process.stderr.write(`pg-lifeline: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  exit(1);
});
