// Check 5: is a connection pooler (PgBouncer, ...) in between, and in which pooling mode.
import { Conn, describeError, sleep, withTimeout, type CheckResult, type DoctorContext } from './util.js';

const ROUNDS = 3;
/** How long the second client keeps a server connection busy while the first runs a statement. */
const HOLD_MS = 250;
const HEAD_START_MS = 60;

const TRANSACTION_RULES =
  'no session state carries over between transactions: use SET LOCAL (not SET), pg_advisory_xact_lock (not session locks), ' +
  'no LISTEN/NOTIFY, temp tables or WITH HOLD cursors across transactions, no named prepared statements (a query `name`) before PgBouncer 1.21, ' +
  'and set statement_timeout on the role, not as a startup option';

interface Evidence {
  mode: 'transaction' | 'session' | 'unknown';
  how: string;
}

/**
 * Runs `SELECT pg_backend_pid()` on the main session (A) while a second session (B) keeps a server
 * connection busy. A server connection shared between A and B, or A moving between server
 * connections, means transaction (or statement) pooling; A always on one pid means session pooling.
 */
async function poolingMode(ctx: DoctorContext): Promise<Evidence> {
  const a = ctx.main;
  if (!a || ctx.ssl === undefined) return { mode: 'unknown', how: 'no session' };
  let b: Conn;
  try {
    b = await Conn.open(ctx.settings, ctx.ssl, ctx.timeoutMs);
  } catch (error) {
    return { mode: 'unknown', how: `a second connection failed: ${describeError(error)}` };
  }
  const pidsA = new Set<number>();
  const pidsB = new Set<number>();
  let blocked = false;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const [first] = await a.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      if (first) pidsA.add(first.pid);
      const held = b.query<{ pid: number }>(`SELECT pg_backend_pid() AS pid, pg_sleep(${HOLD_MS / 1000})`, [], HOLD_MS + ctx.timeoutMs);
      let heldDone = false;
      void held.then(() => (heldDone = true), () => (heldDone = true));
      await sleep(HEAD_START_MS);
      const [second] = await a.query<{ pid: number }>('SELECT pg_backend_pid() AS pid', [], HOLD_MS + ctx.timeoutMs);
      // A statement that had to wait for B's statement to finish shared B's server connection (pool of one).
      if (heldDone) blocked = true;
      if (second) pidsA.add(second.pid);
      try {
        const [other] = await held;
        if (other) pidsB.add(other.pid);
      } catch (error) {
        // B never got a server connection while A held its own: session pooling with a full pool.
        return { mode: 'session', how: `a second client waited for a server connection (${describeError(error)}): the proxy's pool is full` };
      }
      if (pidsA.size > 1 || blocked || [...pidsB].some((pid) => pidsA.has(pid))) break;
    }
  } finally {
    await b.close();
  }
  const shared = [...pidsB].some((pid) => pidsA.has(pid));
  if (pidsA.size > 1) return { mode: 'transaction', how: `one client connection ran on server backends ${[...pidsA].join(', ')}` };
  if (shared || blocked) return { mode: 'transaction', how: 'two client connections shared one server backend' };
  return { mode: 'session', how: `one client connection stayed on backend ${[...pidsA].join(', ')} while another client was busy` };
}

export async function checkProxy(ctx: DoctorContext): Promise<CheckResult> {
  const main = ctx.main;
  if (!main) throw new Error('no session');
  const processID = main.processID;
  const pid = ctx.backendPid;
  if (processID !== null && processID === pid) {
    ctx.proxy = { detected: false, mode: undefined };
    return {
      name: 'proxy',
      verdict: 'ok',
      found: `no proxy: the backend pid the protocol gave (${processID}) is pg_backend_pid(); LISTEN works here (pool.listen())`,
      advice: 'nothing to do',
      data: { detected: false, processID, backendPid: pid ?? null, listen: 'works' },
    };
  }
  const evidence = await withTimeout(poolingMode(ctx), ctx.timeoutMs + ROUNDS * (HOLD_MS + HEAD_START_MS) + 1000, 'pooling mode test');
  ctx.proxy = { detected: true, mode: evidence.mode };
  const id = processID === null ? 'no backend pid' : `backend pid ${processID}`;
  const found = `a proxy is in between: the protocol gave ${id} but pg_backend_pid() is ${pid}; `;
  const want = ctx.instances * ctx.pool.max;
  const data = { detected: true, processID, backendPid: pid ?? null, mode: evidence.mode, evidence: evidence.how };
  switch (evidence.mode) {
    case 'transaction':
      return {
        name: 'proxy',
        verdict: 'warn',
        found: `${found}transaction (or statement) pooling (${evidence.how}); LISTEN does not work here: notifications never arrive`,
        advice: `PgBouncer-style transaction pooling: ${TRANSACTION_RULES}. pool.listen() refuses this URL: give the pool that listens a direct connection to the server`,
        data: { ...data, listen: 'fails' },
      };
    case 'session':
      return {
        name: 'proxy',
        verdict: 'ok',
        found: `${found}probably session pooling (${evidence.how}); LISTEN works, with pool.listen(channel, handler, { sessionPooler: true })`,
        advice: `each pool connection holds a server connection while it is open: keep max × instances (${want}) within PgBouncer's default_pool_size, and keep idleTimeoutMillis short so idle ones give theirs back`,
        data,
      };
    default:
      return {
        name: 'proxy',
        verdict: 'warn',
        found: `${found}pooling mode unknown (${evidence.how})`,
        advice: `if it pools transactions: ${TRANSACTION_RULES}`,
        data,
      };
  }
}
