'use strict';
// node-postgres (pg) client for thermocline's client compatibility tests.
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGPASSWORD) to a fresh, empty database and prints a transcript that must be
// the same whether the server is PostgreSQL itself or thermocline in front of
// it. node-pg sends simple queries when there are no parameters, unnamed or
// named extended-protocol statements otherwise, and parses text results. It
// prints what node-pg decoded (type and value), field metadata, command tags,
// errors (SQLSTATE and diagnostics), notices and notifications; never pids,
// OIDs of user objects, the database name or the clock.
//
// Run it with tests/clients/run.sh node-pg (TZ=UTC: node-pg builds Dates in
// local time).

const crypto = require('crypto');
const pg = require('pg');

const FIRST_USER_OID = 16384;
const WATCHED_PARAMETERS = ['server_encoding', 'client_encoding', 'DateStyle', 'IntervalStyle', 'TimeZone',
  'integer_datetimes', 'standard_conforming_strings'];

function out(line = '') {
  process.stdout.write(line + '\n');
}

function oidText(oid) {
  return oid < FIRST_USER_OID ? String(oid) : '<user type>';
}

function show(v) {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Buffer.isBuffer(v)) return `Buffer:${v.toString('hex')}`;
  if (v instanceof Date) return `Date:${isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()}`;
  if (Array.isArray(v)) return `Array:[${v.map(show).join(', ')}]`;
  if (typeof v === 'number') return `number:${Object.is(v, -0) ? '-0' : String(v)}`;
  if (typeof v === 'bigint') return `bigint:${v}`;
  if (typeof v === 'object') {
    const name = v.constructor && v.constructor.name ? v.constructor.name : 'Object';
    return `${name}:${JSON.stringify(v)}`;
  }
  return `${typeof v}:${JSON.stringify(v)}`;
}

function showValues(values) {
  return '[' + values.map(show).join(', ') + ']';
}

function section(title) {
  out();
  out(`=== ${title}`);
}

const ERROR_FIELDS = ['detail', 'hint', 'position', 'internalPosition', 'internalQuery', 'where', 'schema',
  'table', 'column', 'dataType', 'constraint'];

function printError(e) {
  if (e instanceof pg.DatabaseError) {
    out(`  error sqlstate=${e.code} severity=${e.severity}`);
    out(`    message: ${e.message}`);
    for (const f of ERROR_FIELDS) {
      if (e[f] !== undefined && e[f] !== null) out(`    ${f}: ${e[f]}`);
    }
  } else {
    // Raised by the client itself.
    out(`  client error ${e.name}: ${e.message}`);
  }
}

function printResult(res, opts = {}) {
  const results = Array.isArray(res) ? res : [res];
  for (const r of results) {
    out(`  status: ${r.command} rowCount=${r.rowCount}`);
    if (opts.describe !== false) {
      for (const f of r.fields) {
        out(`  field ${f.name}: dataTypeID=${oidText(f.dataTypeID)} dataTypeSize=${f.dataTypeSize}` +
          ` dataTypeModifier=${f.dataTypeModifier} format=${f.format} columnID=${f.columnID}`);
      }
    }
    for (const row of r.rows) {
      if (Array.isArray(row)) {
        out('  row: ' + row.map(show).join(', '));
      } else {
        out('  row: ' + Object.keys(row).map((k) => `${k}=${show(row[k])}`).join(', '));
      }
    }
  }
}

async function run(client, text, values, opts = {}) {
  let line = `> ${text}`;
  if (values) line += `  -- values ${showValues(values)}`;
  if (opts.name) line += `  -- name ${opts.name}`;
  if (opts.rowMode) line += `  -- rowMode ${opts.rowMode}`;
  if (opts.binary) line += '  -- binary';
  out(line);
  try {
    const config = { text, values };
    for (const k of ['name', 'rowMode', 'binary', 'queryMode']) {
      if (opts[k] !== undefined) config[k] = opts[k];
    }
    const res = await client.query(config);
    printResult(res, opts);
    return res;
  } catch (e) {
    printError(e);
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const pgVersion = require('pg/package.json').version;
  out(`node-postgres ${pgVersion}, node ${process.versions.node.split('.')[0]}`);

  const client = new pg.Client();
  const params = {};
  let watchParams = false;
  client.connection.on('parameterStatus', (msg) => {
    params[msg.parameterName] = msg.parameterValue;
    if (watchParams && WATCHED_PARAMETERS.includes(msg.parameterName)) {
      out(`  parameter status: ${msg.parameterName}=${JSON.stringify(msg.parameterValue)}`);
    }
  });
  client.on('notice', (n) => {
    let line = `  notice: ${n.severity} ${n.code} ${n.message}`;
    if (n.detail) line += ` | detail: ${n.detail}`;
    if (n.hint) line += ` | hint: ${n.hint}`;
    out(line);
  });
  const notes = [];
  client.on('notification', (n) => notes.push(`  notification: channel=${JSON.stringify(n.channel)} payload=${JSON.stringify(n.payload)}`));
  await client.connect();

  section('server');
  for (const p of WATCHED_PARAMETERS) out(`  parameter ${p}: ${JSON.stringify(params[p])}`);
  watchParams = true;
  await run(client, "SELECT current_setting('server_version_num')::int / 10000 AS server_major");
  await run(client, 'SHOW TimeZone');
  await run(client, 'SET extra_float_digits = 1');

  section('schema');
  await run(client, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
  await run(client, `CREATE TABLE samples (
    id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, n20 numeric(20,6), n numeric,
    f4 float4, f8 float8, b bool, t text, vc varchar(10), c char(5), by bytea, u uuid,
    d date, tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb,
    ia int4[], ta text[], m mood)`);
  await run(client, `CREATE TABLE events (
    id serial PRIMARY KEY, name text NOT NULL UNIQUE,
    qty int4 CHECK (qty >= 0) DEFAULT 0,
    at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00')`);
  await run(client, 'CREATE TABLE copy_target (id int4, t text, n numeric, ts timestamp, ia int4[])');

  section('insert: literals (simple query)');
  await run(client, String.raw`INSERT INTO samples VALUES
 (1, 1, 2, 3, 12345.678901, 3.14159265358979323846264338327950288419716939937510,
  1.5, 2.25, true, 'hello', 'varchar', 'ab', '\x00ff10deadbeef',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.123456',
  '2024-02-29 13:14:15.123456', '2024-06-30 23:59:59.999999+02',
  '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2.50, null], "b": "x"}',
  '{"b": "x", "a": [1, 2.50, null]}', '{1,NULL,3}', '{"a b","c,d",NULL,"\"q\""}', 'happy'),
 (2, -32768, -2147483648, 9223372036854775807, -99999999999999.999999,
  -12345678901234567890.123456789012345678901234567890,
  'NaN', 'Infinity', false, E'tab\there\nnewline \\ backslash ''quote'' h\u00e9llo \u2603',
  'ten chars!', 'abcde', '\x', '00000000-0000-0000-0000-000000000000', '0001-01-01',
  '00:00:00', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '-1 days +02:03:04',
  '[]', '{}', '{}', '{}', 'sad'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`);

  section('insert: parameters');
  const insert = `INSERT INTO samples (id, i2, i4, i8, n20, n, f4, f8, b, t, vc, c, by, u, d, tm, ts, tstz,
                     iv, j, jb, ia, ta, m)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20, $21, $22, $23, $24)`;
  // Untyped parameters: node-pg sends every value as text with type 0 (a Buffer
  // as binary), and the server infers the types.
  await run(client, insert, [4, 7, -70000, '1099511627776', '0.000001',
    '123456789012345678901234567890.000000000000000000001', 0.1, 0.1 + 0.2, true, 'param \u00e9 \u{1d11e}', 'vc',
    'xyz', Buffer.from([0, 1, 254, 255]), '12345678-1234-5678-1234-567812345678', '2000-02-29',
    '23:59:59.5', new Date(Date.UTC(2001, 8, 9, 1, 46, 40)), new Date(Date.UTC(2024, 0, 1, 15, 0, 0)),
    '-2 days 01:00:00.000005', { k: [1, 'two', null] }, { z: 1, a: { nested: true } }, [10, null, -30],
    ['x', 'y z', null, '', 'quote"s', 'back\\slash', '{brace}'], 'ok']);
  await run(client, insert, [5, null, null, null, 'NaN', '-0.5', NaN, -Infinity, false, '', '', '',
    Buffer.alloc(0), null, null, null, null, null, null, null, null, [], [], null]);
  // Typed parameters: the statement says what each one is.
  await run(client, 'INSERT INTO samples (id, i2, i8, n, d, tstz, iv, m) VALUES ($1::int4, $2::int2, $3::int8, $4::numeric,' +
    ' $5::date, $6::timestamptz, $7::interval, $8::mood)',
  ['6', '12', BigInt('-9223372036854775808'), '1e-20', '2020-02-02', '2020-02-02 02:02:02+05:30', '1 day 02:00', 'sad']);
  await run(client, 'INSERT INTO samples (id, f8, t, ts) VALUES ($1, $2, $3, $4)', [7, 1e-310, 'seven', '1900-01-01 00:00:00']);
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2) RETURNING id, name, qty, at', ['first', 1]);
  for (const [name, qty] of [['a', 1], ['b', 2], ['c', 3]]) {
    await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', [name, qty], { name: 'insert_event', describe: false });
  }

  section('select (text results)');
  await run(client, 'SELECT * FROM samples ORDER BY id');
  await run(client, 'SELECT f4, f8, f8::text AS f8_text, n FROM samples WHERE id IN (2, 4, 5, 7) ORDER BY id');
  await run(client, "SELECT '{{1,2},{3,4}}'::int4[] AS matrix, ARRAY['happy', 'sad']::mood[] AS moods," +
    " ARRAY[1.5, NULL]::numeric[] AS nums, '[0:1]={7,8}'::int4[] AS lower_bound, ARRAY['2024-01-01'::date] AS dates");
  for (const edge of ["'infinity'::date", "'-infinity'::timestamp", "'infinity'::timestamptz",
    "'0044-03-15 BC'::date", "'294276-12-31 23:59:59.999999'::timestamp", "'NaN'::numeric",
    "'-0'::float8", "'24:00:00'::time", "'1 year'::interval * 10000", "'\\x'::bytea",
    "'(1,2)'::point", "'<(1,2),3>'::circle", "'192.168.0.1/24'::inet", "'[1,5)'::int4range",
    "'9007199254740993'::int8", "'{1,2}'::int8[]", "'a & b'::tsquery", "'12:34:56+05'::timetz"]) {
    await run(client, `SELECT ${edge} AS v`, undefined, { describe: false });
  }
  await run(client, 'SELECT id, t, m FROM samples WHERE id <= $1 ORDER BY id', [2], { rowMode: 'array' });

  section('binary results');
  // node-pg asks for binary results with `binary: true`, but its protocol
  // parser decodes every field as UTF-8 text before the binary type parsers
  // see it, so most values below come out mangled. The mangling depends only
  // on the bytes received, so the transcript still shows whether they match.
  await run(client, 'SELECT id, i2, i4, i8, n20, n, f4, f8, b, t, by, ts, tstz, ia, ta FROM samples WHERE id = ANY($1) ORDER BY id',
    [[1, 2, 3, 4, 6]], { binary: true });

  section('named prepared statement, 10 executions');
  for (let i = 0; i < 10; i++) {
    await run(client, 'SELECT id, i8, n20, f4, f8, d, ts, tstz, iv, j, jb, ia, ta, m FROM samples WHERE id = $1',
      [1 + (i % 4)], { name: 'pick_sample', describe: i === 0 });
  }
  await run(client, 'SELECT $1::text AS other_text', ['x'], { name: 'pick_sample' });

  section('unnamed statements, 10 executions');
  for (let i = 0; i < 10; i++) {
    await run(client, 'SELECT id, by, u, tm, c, vc FROM samples WHERE id = $1', [1 + (i % 4)], { describe: i === 0 });
  }
  await run(client, 'SELECT 1 AS extended_without_params', undefined, { queryMode: 'extended' });

  section('time zones and date styles');
  for (const tz of ['America/New_York', 'Asia/Kolkata', 'UTC']) {
    await run(client, `SET TimeZone = '${tz}'`);
    await run(client, 'SELECT id, tstz, tstz::text AS tstz_text FROM samples WHERE tstz IS NOT NULL ORDER BY id',
      undefined, { describe: false });
  }
  for (const style of ['SQL, DMY', 'German', 'Postgres, MDY', 'ISO, MDY']) {
    await run(client, `SET DateStyle = '${style}'`);
    await run(client, 'SELECT d, ts, tstz, d::text AS d_text FROM samples WHERE id IN (1, 2) ORDER BY id',
      undefined, { describe: false });
  }
  for (const style of ['sql_standard', 'iso_8601', 'postgres_verbose', 'postgres']) {
    await run(client, `SET IntervalStyle = '${style}'`);
    await run(client, 'SELECT iv, iv::text AS iv_text FROM samples WHERE id IN (1, 2) ORDER BY id',
      undefined, { describe: false });
  }

  section('errors');
  await run(client, 'SELECT 1 / 0');
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', ['first', 1]);
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', ['negative', -1]);
  await run(client, 'SELEC 1');
  await run(client, 'SELEC $1', [1]);
  await run(client, 'SELECT id FROM samples WHERE');
  await run(client, 'SELECT * FROM no_such_table');
  await run(client, 'SELECT $1::int4', ['not a number']);
  await run(client, "SELECT 'nope'::mood");
  await run(client, 'SELECT $1::int4, $2::int4', [1]);
  await run(client, "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7 USING ERRCODE = 'P0001', HINT = 'raised on purpose'; END $$");
  await run(client, "SELECT 'fine again' AS status");

  section('transactions');
  await run(client, 'BEGIN');
  await run(client, "INSERT INTO events (name, qty) VALUES ('in failed tx', 1)");
  await run(client, 'SELECT 1 / 0');
  await run(client, "SELECT 'ignored' AS status");
  await run(client, 'ROLLBACK');
  await run(client, "SELECT count(*) AS failed_rows FROM events WHERE name = 'in failed tx'");
  await run(client, 'BEGIN');
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', ['kept 1', 1]);
  await run(client, 'SAVEPOINT s1');
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', ['kept 1', 2]);
  await run(client, 'ROLLBACK TO SAVEPOINT s1');
  await run(client, 'INSERT INTO events (name, qty) VALUES ($1, $2)', ['kept 2', 2]);
  await run(client, 'COMMIT');
  await run(client, 'SELECT id, name, qty, at FROM events ORDER BY id', undefined, { describe: false });

  section('multi-statement simple query');
  await run(client, 'SELECT 1 AS a; SELECT 2 AS b');
  await run(client, 'CREATE TABLE multi (x int); INSERT INTO multi VALUES (1), (2); SELECT sum(x) AS total FROM multi; DROP TABLE multi');
  await run(client, "SELECT 'ok' AS first; SELECT 1 / 0; SELECT 'not reached'");

  section('copy (node-pg has no COPY streams of its own)');
  await run(client, "INSERT INTO copy_target (id, t) VALUES (1, 'one'), (2, 'two')");
  await run(client, 'COPY copy_target (id, t) FROM STDIN');
  await run(client, 'COPY copy_target (id, t) TO STDOUT');
  await run(client, 'SELECT count(*) AS copied FROM copy_target');

  section('notices');
  await run(client, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$");
  await run(client, "DO $$ BEGIN RAISE NOTICE 'with detail' USING DETAIL = 'the detail', HINT = 'the hint'; END $$");
  await run(client, 'CREATE TABLE IF NOT EXISTS events (id int4)');
  await run(client, 'DROP TABLE IF EXISTS no_such_table');
  await run(client, "SELECT 'after notices' AS status");

  section('listen / notify');
  // A notification comes after the ReadyForQuery of the statement that caused
  // it: wait for the expected number, then print them.
  async function showNotifications(expected) {
    await client.query('SELECT 1');
    const deadline = Date.now() + 5000;
    while (notes.length < expected && Date.now() < deadline) await sleep(20);
    for (const n of notes) out(n);
    out(`  (${notes.length} notifications)`);
    notes.length = 0;
  }
  await run(client, 'LISTEN jobs');
  await run(client, 'LISTEN "Mixed Case"');
  await run(client, "NOTIFY jobs, 'first payload'");
  await run(client, "SELECT pg_notify('jobs', $1)", ['second payload \u00e9']);
  await run(client, `NOTIFY "Mixed Case", ''`);
  await showNotifications(3);
  await run(client, 'BEGIN');
  await run(client, "NOTIFY jobs, 'committed'");
  await run(client, "NOTIFY jobs, 'committed'");
  await run(client, "NOTIFY jobs, 'committed too'");
  await run(client, 'COMMIT');
  await showNotifications(2);
  await run(client, 'BEGIN');
  await run(client, "NOTIFY jobs, 'rolled back'");
  await run(client, 'ROLLBACK');
  const other = new pg.Client();
  await other.connect();
  out("> (second connection) NOTIFY jobs, 'from another session'");
  await other.query("NOTIFY jobs, 'from another session'");
  await other.end();
  await showNotifications(1);
  await run(client, 'UNLISTEN *');
  await run(client, "NOTIFY jobs, 'nobody listens'");
  await showNotifications(0);

  section('cancel');
  out('> SELECT pg_sleep(10)  -- after 0.5 s a second pg.Client sends a CancelRequest for it');
  const started = Date.now();
  const query = new pg.Query('SELECT pg_sleep(10)');
  const finished = new Promise((resolve) => {
    query.on('error', (e) => resolve(e));
    query.on('end', () => resolve(null));
  });
  client.query(query);
  await sleep(500);
  new pg.Client().cancel(client, query);
  const cancelError = await finished;
  if (cancelError) printError(cancelError);
  else out('  not cancelled');
  await run(client, "SELECT 'still usable' AS status");
  out(`  returned within 5 s: ${Date.now() - started < 5000}`);

  section('large values');
  out('> SELECT g, md5(g::text) FROM generate_series(1, 20000) g');
  const many = await client.query('SELECT g, md5(g::text) AS m FROM generate_series(1, 20000) g');
  const h = crypto.createHash('sha256');
  for (const r of many.rows) h.update(`${r.g}:${r.m}\n`);
  out(`  rows=${many.rows.length} sha256=${h.digest('hex')}`);
  const bigIn = Buffer.alloc(256 * 4096);
  for (let i = 0; i < bigIn.length; i++) bigIn[i] = i % 256;
  out("> SELECT repeat('abc', 400000) AS big, $1::bytea AS echoed");
  const big = (await client.query("SELECT repeat('abc', 400000) AS big, $1::bytea AS echoed", [bigIn])).rows[0];
  out(`  big: len=${big.big.length} sha256=${crypto.createHash('sha256').update(big.big).digest('hex')}`);
  out(`  echoed bytea equal: ${bigIn.equals(big.echoed)} len=${big.echoed.length}`);

  section('pipelined client');
  const piped = new pg.Client({ pipeline: true });
  await piped.connect();
  const results = await Promise.allSettled([
    piped.query('SELECT $1::int4 AS a', [1]),
    piped.query("SELECT 'two' AS b"),
    piped.query('SELECT 1 / $1::int4 AS c', [0]),
    piped.query('SELECT $1::text AS d', ['after error']),
  ]);
  for (const r of results) {
    if (r.status === 'fulfilled') printResult(r.value, { describe: false });
    else printError(r.reason);
  }
  await piped.end();

  section('pool');
  const pool = new pg.Pool({ max: 2 });
  const [r1, r2] = await Promise.all([
    pool.query('SELECT count(*) AS n FROM samples'),
    pool.query('SELECT count(*) AS n FROM events'),
  ]);
  out(`  pool: ${r1.rows[0].n} samples, ${r2.rows[0].n} events`);
  await pool.end();

  section('end');
  await run(client, "SELECT 'done' AS status");
  await client.end();
  out('  closed');
}

main().catch((e) => {
  process.stderr.write(`node_pg_client: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
