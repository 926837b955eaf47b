// Option validation and the exposed options object. No server: none of these pools ever connects.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import pg from 'pg';
import { resolveConfig } from '../src/config.js';
import { ConfigError, LifelineError, Pool, type PoolOptions } from '../src/index.js';

/** Builds a pool from deliberately ill-typed options; ends it if, against expectations, it was built. */
function attempt(options: unknown): unknown {
  try {
    const pool = new Pool(options as PoolOptions);
    void pool.end();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** Asserts a ConfigError naming `option` whose message contains every piece of `mentions`. */
function assertConfigError(options: unknown, option: string, mentions: string[]): void {
  const error = attempt(options);
  assert.ok(error instanceof ConfigError, `expected ConfigError for ${JSON.stringify(options)}, got ${String(error)}`);
  assert.ok(error instanceof LifelineError);
  assert.ok(error instanceof Error);
  assert.equal(error.code, 'PGL_CONFIG');
  assert.equal(error.name, 'ConfigError');
  assert.equal(error.option, option);
  assert.ok(error.message.includes(`\`${option}\``), error.message);
  for (const text of mentions) assert.ok(error.message.includes(text), `"${error.message}" should mention "${text}"`);
}

async function withPool<T>(options: PoolOptions | undefined, fn: (pool: Pool) => T | Promise<T>): Promise<T> {
  const pool = new Pool(options);
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

describe('ConfigError', () => {
  test('max must be a whole number of at least 1', () => {
    assertConfigError({ max: 0 }, 'max', ['from 1 to 100000', 'got 0']);
    assertConfigError({ max: -1 }, 'max', ['from 1 to 100000', 'got -1']);
    assertConfigError({ max: 1.5 }, 'max', ['whole number from 1 to 100000', 'got 1.5']);
    // A numeric string is refused rather than coerced.
    assertConfigError({ max: '10' }, 'max', ['from 1 to 100000', 'got "10"']);
    assertConfigError({ max: NaN }, 'max', ['from 1 to 100000']);
  });

  test('min cannot exceed max', () => {
    assertConfigError({ min: 5, max: 2 }, 'min', ['from 0 to 2', 'got 5']);
    assertConfigError({ min: -1 }, 'min', ['from 0 to 10']);
  });

  test('timeouts cannot be negative', () => {
    assertConfigError({ idleTimeoutMillis: -1 }, 'idleTimeoutMillis', ['from 0 to 2147483647', 'got -1']);
    assertConfigError({ connectionTimeoutMillis: -5 }, 'connectionTimeoutMillis', ['from 0 to 2147483647']);
    assertConfigError({ shutdownTimeoutMillis: -1 }, 'shutdownTimeoutMillis', ['from 0 to 2147483647']);
    assertConfigError({ keepaliveIntervalMillis: 1.5 }, 'keepaliveIntervalMillis', ['whole number from 0']);
    // A probe needs at least 1 ms.
    assertConfigError({ validationTimeoutMillis: 0 }, 'validationTimeoutMillis', ['from 1 to 2147483647']);
  });

  test('maxLifetimeJitter is a fraction from 0 to 0.5', () => {
    assertConfigError({ maxLifetimeJitter: 0.9 }, 'maxLifetimeJitter', ['from 0 to 0.5', 'got 0.9']);
    assertConfigError({ maxLifetimeJitter: -0.1 }, 'maxLifetimeJitter', ['from 0 to 0.5']);
  });

  test('booleans must be booleans', () => {
    assertConfigError({ keepAlive: 'yes' }, 'keepAlive', ['true or false', 'got "yes"']);
    assertConfigError({ releaseTraces: 1 }, 'releaseTraces', ['true', 'false', 'got 1']);
    assertConfigError({ allowExitOnIdle: 'false' }, 'allowExitOnIdle', ['true or false']);
  });

  test('hooks must be functions', () => {
    assertConfigError({ onConnect: 1 }, 'onConnect', ['a function', 'got 1']);
    assertConfigError({ verify: 'no' }, 'verify', ['a function']);
    assertConfigError({ Client: {} }, 'Client', ['a function', 'got an object']);
  });

  test('poolSize, the old name of max, must agree with max', () => {
    assertConfigError({ max: 5, poolSize: 6 }, 'poolSize', ['equal max', 'got 6']);
    // Out of range under its old name is refused too (the error currently names it `max`).
    assertConfigError({ poolSize: 0 }, 'poolSize', ['1 to 100000']);
  });

  test('options must be an object', () => {
    assertConfigError('postgres://localhost/db', 'options', ['an object']);
    assertConfigError(42, 'options', ['an object', 'got 42']);
    // pg.Pool accepts null as "no options"; so must a drop-in.
    assert.equal(attempt(null), undefined);
  });

  test('accepted edge values do not throw', async () => {
    await withPool({ max: 1, maxLifetimeJitter: 0.5, connectionTimeoutMillis: 0, idleTimeoutMillis: 0 }, (pool) => {
      assert.equal(pool.options.max, 1);
      assert.equal(pool.options.connectionTimeoutMillis, 0);
    });
    await withPool({ poolSize: 4 }, (pool) => assert.equal(pool.options.max, 4));
    await withPool({ max: 3, poolSize: 3 }, (pool) => assert.equal(pool.options.max, 3));
    await withPool({ maxUses: Infinity, maxLifetimeSeconds: 0 }, (pool) => assert.equal(pool.options.maxUses, Infinity));
  });
});

describe('pool.options', () => {
  test('fills in pg defaults and the defaults pg-lifeline changes', async () => {
    await withPool(undefined, (pool) => {
      const o = pool.options;
      // Same as pg.Pool.
      assert.equal(o.max, 10);
      assert.equal(o.min, 0);
      assert.equal(o.idleTimeoutMillis, 10_000);
      assert.equal(o.maxUses, Infinity);
      // Safer than pg.Pool's defaults (which wait forever and never retire connections).
      assert.equal(o.connectionTimeoutMillis, 30_000);
      assert.equal(o.maxLifetimeSeconds, 1800);
      assert.equal(o.keepAlive, true);
      assert.equal(o.keepAliveInitialDelayMillis, 30_000);
      // pg-lifeline's own options.
      assert.equal(o.validationWindowMillis, 1000);
      assert.equal(o.validationTimeoutMillis, 3000);
      assert.equal(o.keepaliveIntervalMillis, 60_000);
      assert.equal(o.maxLifetimeJitter, 0.05);
      assert.equal(o.shutdownTimeoutMillis, 10_000);
    });
  });

  test('keeps explicit values, including keepAlive: false', async () => {
    await withPool({ keepAlive: false, connectionTimeoutMillis: 0, maxLifetimeSeconds: 60, min: 2 }, (pool) => {
      assert.equal(pool.options.keepAlive, false);
      assert.equal(pool.options.keepAliveInitialDelayMillis, 0);
      assert.equal(pool.options.connectionTimeoutMillis, 0);
      assert.equal(pool.options.maxLifetimeSeconds, 60);
      assert.equal(pool.options.min, 2);
    });
  });

  test('idleTimeoutMillis: null means disabled (0), as in pg', async () => {
    await withPool({ idleTimeoutMillis: null as unknown as number }, (pool) => assert.equal(pool.options.idleTimeoutMillis, 0));
  });

  test('is frozen', async () => {
    await withPool({ max: 3 }, (pool) => {
      assert.ok(Object.isFrozen(pool.options));
      // ESM is strict mode, so writing to a frozen object throws instead of being ignored.
      assert.throws(() => {
        (pool.options as { max: number }).max = 99;
      }, TypeError);
      assert.equal(pool.options.max, 3);
    });
  });

  test('is a copy: later changes to the caller\'s object have no effect', async () => {
    const mine: PoolOptions = { max: 3 };
    await withPool(mine, (pool) => {
      mine.max = 7;
      assert.equal(pool.options.max, 3);
      assert.notEqual(pool.options, mine);
    });
  });

  test('hides the password from enumeration but keeps it usable', async () => {
    await withPool({ user: 'app', password: 's3cret-value' }, (pool) => {
      assert.equal(pool.options.password, 's3cret-value');
      assert.ok(!Object.keys(pool.options).includes('password'));
      assert.ok(!JSON.stringify(pool.options).includes('s3cret-value'));
      assert.equal(pool.options.user, 'app');
      assert.ok(Object.keys(pool.options).includes('user'));
    });
  });
});

describe('drop-in identity', () => {
  test('a Pool is a pg.Pool and an EventEmitter', async () => {
    await withPool(undefined, (pool) => {
      assert.ok(pool instanceof pg.Pool);
      assert.equal(typeof pool.on, 'function');
      assert.equal(pool.Client, pg.Client);
      assert.equal(pool.totalCount, 0);
      assert.equal(pool.ending, false);
    });
  });

  test('a custom Client class is kept', async () => {
    class MyClient extends pg.Client {}
    await withPool({ Client: MyClient }, (pool) => assert.equal(pool.Client, MyClient));
  });

  test('never connects on its own when min is 0', async () => {
    await withPool(undefined, (pool) => {
      const stats = pool.stats();
      assert.equal(stats.total, 0);
      assert.equal(stats.connects + stats.connectErrors, 0);
      assert.equal(stats.max, 10);
    });
  });
});

describe('environment and printed connection strings', () => {
  test('an empty PG* variable counts as unset, as in pg and libpq', async () => {
    const saved = { PGPORT: process.env['PGPORT'], PGHOST: process.env['PGHOST'], PGTARGETSESSIONATTRS: process.env['PGTARGETSESSIONATTRS'] };
    try {
      Object.assign(process.env, { PGPORT: '', PGHOST: '', PGTARGETSESSIONATTRS: '' });
      await withPool(undefined, (pool) => assert.equal(pool.options.port, undefined));
      const config = resolveConfig({ connectionString: 'dbname=x' });
      assert.deepEqual(config.hosts.targets.map((t) => t.key), ['localhost:5432']);
      assert.equal(config.hosts.targetSessionAttrs, 'any');
      process.env['PGPORT'] = 'five';
      assertConfigError(undefined, 'PGPORT', ['ports from 1 to 65535', '"five"']);
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  test('the password inside connectionString is masked when the options are printed, and readable directly', async () => {
    const cases = [
      ['postgres://u:s3cret@h/db', 'postgres://u:*****@h/db'],
      ["host=h password='s3cret x' user=u", 'host=h password=***** user=u'],
      ['host=h password=s3cret\\ x', 'host=h password=*****'],
      ['postgres://u@h/db?password=s3cret&sslmode=disable', 'postgres://u@h/db?password=*****&sslmode=disable'],
    ] as const;
    for (const [connectionString, shown] of cases) {
      await withPool({ connectionString }, (pool) => {
        assert.equal(pool.options.connectionString, connectionString);
        assert.equal((JSON.parse(JSON.stringify(pool.options)) as PoolOptions).connectionString, shown);
        for (const text of [inspect(pool.options), inspect(pool, { depth: 5 })]) assert.ok(!text.includes('s3cret'), text);
        assert.equal({ ...pool.options }.connectionString, connectionString, 'a spread keeps the real string');
      });
    }
  });
});
