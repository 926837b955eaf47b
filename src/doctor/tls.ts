// Check 3: which TLS modes work, and the server certificate's expiry and host name.
import { connect as netConnect, isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type DetailedPeerCertificate } from 'node:tls';
import { isLoopback, isUnixSocket, sslOption, type ConnSettings, type TlsVariant } from './settings.js';
import { Conn, describeError, worst, type CheckResult, type DoctorContext, type Verdict } from './util.js';

const EXPIRY_WARN_DAYS = 30;
const DAY_MS = 86_400_000;
const MODES: TlsVariant[] = ['disable', 'require', 'verify-full'];

/** The protocol's SSLRequest: length 8, code 80877103 (1234 in the high 16 bits, 5679 in the low). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

export interface ServerCertificate {
  cert: DetailedPeerCertificate;
  protocol: string | null;
}

/**
 * Reads the server's certificate without verifying it: SSLRequest, the one-byte 'S', then a TLS
 * handshake on the same socket. Bounded by `timeoutMs`.
 */
export function readServerCertificate(s: ConnSettings, timeoutMs: number): Promise<ServerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: s.host, port: s.port });
    let done = false;
    const finish = (error: Error | undefined, value?: ServerCertificate): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value as ServerCertificate);
    };
    const timer = setTimeout(() => finish(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (error) => finish(error));
    socket.once('connect', () => socket.write(SSL_REQUEST));
    socket.once('data', (reply) => {
      if (reply[0] !== 0x53 /* 'S' */) {
        finish(new Error(reply[0] === 0x4e ? 'the server does not offer TLS' : 'unexpected answer to SSLRequest'));
        return;
      }
      const secure = tlsConnect({ socket, rejectUnauthorized: false, ...(isIP(s.host) ? {} : { servername: s.host }) });
      secure.on('error', (error) => finish(error));
      secure.once('secureConnect', () => {
        const value = { cert: secure.getPeerCertificate(true), protocol: secure.getProtocol() };
        secure.destroy();
        finish(undefined, value);
      });
    });
  });
}

async function tryMode(ctx: DoctorContext, mode: TlsVariant): Promise<{ mode: TlsVariant; ok: boolean; error?: string }> {
  try {
    const conn = await Conn.open(ctx.settings, sslOption(mode, ctx.ca), ctx.timeoutMs);
    await conn.close();
    return { mode, ok: true };
  } catch (error) {
    return { mode, ok: false, error: describeError(error) };
  }
}

const day = (date: Date): string => date.toISOString().slice(0, 10);

export async function checkTls(ctx: DoctorContext): Promise<CheckResult> {
  const s = ctx.settings;
  if (isUnixSocket(s)) {
    return { name: 'tls', verdict: 'ok', found: 'Unix socket: TLS does not apply', advice: 'nothing to do', data: { unixSocket: true } };
  }
  const [attempts, certificate] = await Promise.all([
    Promise.all(MODES.map((mode) => tryMode(ctx, mode))),
    readServerCertificate(s, ctx.timeoutMs).then(
      (value) => value,
      (error: unknown) => describeError(error),
    ),
  ]);
  const works = (mode: TlsVariant): boolean => attempts.some((a) => a.mode === mode && a.ok);
  // Modes that failed the same way are listed together: "require, verify-full failed (...)".
  const groups = new Map<string, TlsVariant[]>();
  for (const a of attempts) groups.set(a.ok ? 'ok' : `failed (${a.error})`, [...(groups.get(a.ok ? 'ok' : `failed (${a.error})`) ?? []), a.mode]);
  const modes = [...groups].map(([outcome, list]) => `${list.join(', ')} ${outcome}`).join('; ');
  const verdicts: Verdict[] = ['ok'];
  const found: string[] = [modes];
  const advice: string[] = [];
  const data: Record<string, unknown> = { modes: attempts };

  const tlsWorks = works('require') || works('verify-full');
  if (!tlsWorks) {
    if (isLoopback(s)) {
      found.push('the server offers no TLS; this is a loopback connection');
      advice.push('nothing to do locally; turn on ssl before the server is reached over a network');
    } else {
      verdicts.push('warn');
      found.push('TLS is off: traffic crosses the network unencrypted');
      advice.push('turn on ssl on the server (ssl = on, ssl_cert_file, ssl_key_file), then use sslmode=verify-full');
    }
  } else if (!works('verify-full')) {
    verdicts.push('warn');
    found.push('only unverified TLS works: a man in the middle would go unnoticed');
    advice.push(`verify the server: give its CA with --ca-file (sslrootcert=… in the URL) and use sslmode=verify-full, with a certificate that names ${s.host}`);
  } else if (s.sslmode !== 'verify-full') {
    advice.push('verify-full works: use sslmode=verify-full in the app');
  }

  if (typeof certificate === 'string') {
    if (tlsWorks) found.push(`certificate not read: ${certificate}`);
  } else {
    const { cert, protocol } = certificate;
    const expires = new Date(cert.valid_to);
    const daysLeft = (expires.getTime() - Date.now()) / DAY_MS;
    const subject = cert.subject?.CN ? `CN=${cert.subject.CN}` : 'no CN';
    const selfSigned = cert.fingerprint256 !== undefined && cert.issuerCertificate?.fingerprint256 === cert.fingerprint256;
    const mismatch = checkServerIdentity(s.host, cert);
    found.push(`certificate ${subject}${selfSigned ? ' (self-signed)' : ''}, ${protocol ?? 'TLS'}, valid until ${day(expires)}`);
    if (mismatch) found.push(`it does not name ${s.host} (${mismatch.message.replace(/[:\s]+$/, '')})`);
    if (daysLeft < 0) {
      verdicts.push('fail');
      found.push(`EXPIRED on ${day(expires)}`);
      advice.push(`renew the server certificate now (it expired on ${day(expires)})`);
    } else if (daysLeft < EXPIRY_WARN_DAYS) {
      verdicts.push('warn');
      found.push(`expires on ${day(expires)}, in ${Math.floor(daysLeft)} day${Math.floor(daysLeft) === 1 ? '' : 's'}`);
      advice.push(`renew the server certificate before ${day(expires)}`);
    }
    Object.assign(data, {
      certificate: { subject: cert.subject?.CN ?? null, issuer: cert.issuer?.CN ?? null, validTo: expires.toISOString(), daysLeft, selfSigned, protocol },
      hostnameMatches: mismatch === undefined,
    });
  }
  if (works('disable') && tlsWorks && !isLoopback(s)) {
    found.push('the server also accepts unencrypted logins');
    advice.push('use hostssl (not host) lines in pg_hba.conf so no client can log in without TLS');
  }
  return { name: 'tls', verdict: worst(verdicts), found: found.join('; '), advice: advice.join('; ') || 'nothing to do', data };
}
