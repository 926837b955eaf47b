// Check 6: do instances × max fit in the server's connection slots, with room to spare.
import { worst, type CheckResult, type DoctorContext, type Verdict } from './util.js';

const HEADROOM = 0.1;

export async function checkHeadroom(ctx: DoctorContext): Promise<CheckResult> {
  if (!ctx.main) throw new Error('no session');
  const [row] = await ctx.main.query<{ max: number; superuser: number; reserved: number | null; in_use: number }>(
    `SELECT current_setting('max_connections')::int AS max,
            current_setting('superuser_reserved_connections')::int AS superuser,
            (SELECT setting::int FROM pg_settings WHERE name = 'reserved_connections') AS reserved,
            (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS in_use`,
  );
  if (!row) throw new Error('no answer');
  const reserved = row.superuser + (row.reserved ?? 0);
  const slots = row.max - reserved;
  const { instances } = ctx;
  const max = ctx.pool.max;
  const want = instances * max;
  const fitsPerInstance = Math.floor((slots * (1 - HEADROOM)) / instances);
  const reservedText = `${row.superuser} superuser_reserved_connections${row.reserved !== null ? ` + ${row.reserved} reserved_connections` : ''}`;
  const found = [
    `${instances} instance${instances === 1 ? '' : 's'} × max ${max} = ${want} connections; the server has ${slots} slots ` +
      `(max_connections ${row.max} − ${reservedText}), ${row.in_use} in use by other sessions now`,
  ];
  const verdicts: Verdict[] = ['ok'];
  const advice: string[] = [];
  const recommend =
    fitsPerInstance >= 1
      ? `set max: ${fitsPerInstance} (or less) per instance to keep ${HEADROOM * 100} % free`
      : `even max: 1 per instance leaves no headroom: run fewer instances`;
  const bigger = 'or raise max_connections (needs a restart), or put PgBouncer (transaction pooling) in front';
  const proxied = ctx.proxy?.detected === true;
  if (want > slots) {
    verdicts.push(proxied ? 'warn' : 'fail');
    found.push(`${want - slots} more than fit`);
    advice.push(`${recommend}, ${bigger}`);
  } else if (slots - want < slots * HEADROOM) {
    verdicts.push('warn');
    found.push(`only ${slots - want} slots (${Math.round(((slots - want) / slots) * 100)} %) left for admin sessions, migrations and deploys`);
    advice.push(`${recommend}, ${bigger}`);
  } else if (want + row.in_use > slots) {
    verdicts.push('warn');
    found.push(`with the ${row.in_use} sessions open now (some may be this app's) only ${Math.max(0, slots - row.in_use)} slots are free`);
    advice.push(`check who holds the other connections (pg_stat_activity); ${recommend}`);
  } else {
    advice.push(`fits: up to max ${fitsPerInstance} per instance keeps ${HEADROOM * 100} % free`);
  }
  if (proxied) {
    found.push('behind a proxy these are the server’s numbers: the app’s connections count against the proxy’s limits');
    advice.push(`make sure the proxy's max_client_conn is at least ${want}, and its pool sizes fit in the server's ${slots} slots`);
  }
  return {
    name: 'headroom',
    verdict: worst(verdicts),
    found: found.join('; '),
    advice: advice.join('; '),
    data: {
      maxConnections: row.max,
      superuserReserved: row.superuser,
      reservedConnections: row.reserved,
      slots,
      inUse: row.in_use,
      instances,
      max,
      wanted: want,
      recommendedMax: Math.max(fitsPerInstance, 0),
    },
  };
}
