// A test certificate authority and a server certificate it signed, made once per machine with the
// openssl CLI and cached in the temp dir, so throwaway servers serve TLS that clients can verify
// (`sslmode=verify-full`, `ssl: { ca }`), not only TLS with verification turned off.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Part of the cache dir's name: bump it whenever what is generated changes. */
const FORMAT = 1;
const DAYS = '3650';

/** Files of the harness's test CA and of the server certificate it signed (for 127.0.0.1 and localhost). */
export interface TestCertificates {
  /** The CA certificate, PEM: what clients pass as `ssl.ca` or `sslrootcert`. */
  readonly ca: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync('openssl', args, { cwd });
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'openssl is not installed (apt-get install openssl)' : String((error as { stderr?: string }).stderr ?? error);
    throw new Error(`Could not make the harness's test certificates: ${reason}`, { cause: error });
  }
}

async function generate(dir: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', DAYS, '-subj', '/CN=pg-lifeline test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
  // Both names clients use for the loopback server: verify-full checks the one they connected to.
  await writeFile(path.join(dir, 'server.ext'), 'subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n');
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', DAYS, '-extfile', 'server.ext'], dir);
}

let certificates: Promise<TestCertificates> | undefined;

/** The cached test CA and server certificate, generated on first use (built aside, then renamed into place). */
export function testCertificates(): Promise<TestCertificates> {
  certificates ??= (async () => {
    const dir = path.join(os.tmpdir(), `pg-lifeline-tls-${process.getuid?.() ?? 'x'}-v${FORMAT}`);
    if (!existsSync(path.join(dir, 'server.crt'))) {
      const building = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-tls.tmp-'));
      try {
        await generate(building);
        await rename(building, dir);
      } catch (error) {
        await rm(building, { recursive: true, force: true });
        // Losing the rename race is fine: another process put complete certificates in place.
        if (!existsSync(path.join(dir, 'server.crt'))) throw error;
      }
    }
    const caFile = path.join(dir, 'ca.crt');
    return { ca: await readFile(caFile, 'utf8'), caFile, certFile: path.join(dir, 'server.crt'), keyFile: path.join(dir, 'server.key') };
  })();
  certificates.catch(() => (certificates = undefined));
  return certificates;
}
