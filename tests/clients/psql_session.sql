-- psql session for thermocline's client compatibility tests.
-- run.sh feeds this file on standard input to
--   psql -X -a -v ON_ERROR_STOP=0
-- from an empty scratch directory (the \copy file lives there), in a fresh
-- database. Errors are printed and the session goes on. Everything printed must
-- be the same for any fresh database on the same server: no pids, no OIDs of
-- user objects, no database name, no clock.
\pset pager off
\set VERBOSITY default

\echo '=== server'
SELECT current_setting('server_version_num')::int / 10000 AS server_major;
SHOW server_encoding;
SHOW client_encoding;
SHOW standard_conforming_strings;
SHOW integer_datetimes;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
\echo :ENCODING

\echo '=== schema'
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE samples (
    id      int4 PRIMARY KEY,
    i2      int2,
    i4      int4,
    i8      int8,
    n20     numeric(20,6),
    n       numeric,
    f4      float4,
    f8      float8,
    b       bool,
    t       text,
    vc      varchar(10),
    c       char(5),
    by      bytea,
    u       uuid,
    d       date,
    tm      time,
    ts      timestamp,
    tstz    timestamptz,
    iv      interval,
    j       json,
    jb      jsonb,
    ia      int4[],
    ta      text[],
    m       mood
);
COMMENT ON TABLE samples IS 'one column per type a client decodes';
COMMENT ON COLUMN samples.n IS 'unconstrained numeric';
CREATE INDEX samples_t_idx ON samples (t);
CREATE TABLE events (
    id   serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    qty  int4 CHECK (qty >= 0) DEFAULT 0,
    at   timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00'
);
CREATE VIEW sample_moods AS SELECT id, t, m FROM samples;
CREATE TABLE copy_target (id int4, t text, n numeric, ts timestamp, ia int4[]);

\echo '=== insert'
INSERT INTO samples VALUES
 (1, 1, 2, 3, 12345.678901, 3.14159265358979323846264338327950288419716939937510,
  1.5, 2.25, true, 'hello', 'varchar', 'ab', '\x00ff10deadbeef',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:14:15.123456',
  '2024-02-29 13:14:15.123456', '2024-06-30 23:59:59.999999+02',
  '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2.50, null], "b": "x"}',
  '{"b": "x", "a": [1, 2.50, null]}', '{1,NULL,3}', '{"a b","c,d",NULL,"\"q\""}', 'happy'),
 (2, -32768, -2147483648, 9223372036854775807, -99999999999999.999999,
  -12345678901234567890.123456789012345678901234567890,
  'NaN', 'Infinity', false, E'tab\there\nnewline \\ backslash ''quote'' h\u00e9llo \u2603', 'ten chars!', 'abcde', '\x',
  '00000000-0000-0000-0000-000000000000', '0001-01-01', '00:00:00', '1999-12-31 23:59:59',
  '1970-01-01 00:00:00+00', '-1 days +02:03:04', '[]', '{}', '{}', '{}', 'sad'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO samples (id, f4, f8, n, d, ts, tstz) VALUES
 (4, 0.1, 0.30000000000000004, 'NaN', 'infinity', '-infinity', 'infinity'),
 (5, '-Infinity', 1e-310, 'Infinity', '5874897-12-31', '294276-12-31 23:59:59.999999', '4713-01-01 00:00:00+00 BC')
RETURNING id, f4, f8, n;
\echo :ROW_COUNT
SELECT * FROM samples ORDER BY id;
\x on
SELECT * FROM samples WHERE id = 1;
\x off
SELECT id, f4, f8, f8::text AS f8_text FROM samples WHERE id IN (2, 4, 5) ORDER BY id;
SET extra_float_digits = 0;
SELECT id, f4, f8 FROM samples WHERE id IN (2, 4, 5) ORDER BY id;
SET extra_float_digits = 3;
SELECT id, f4, f8 FROM samples WHERE id IN (2, 4, 5) ORDER BY id;
SET extra_float_digits = 1;
SELECT ia[1] AS first, array_length(ta, 1) AS ta_len, ta[4] AS quoted, jb -> 'a' AS a, j ->> 'b' AS b, m
  FROM samples WHERE id = 1;
SELECT '{{1,2},{3,4}}'::int4[] AS matrix, '[0:1]={7,8}'::int4[] AS lower_bound, ARRAY['happy', 'sad']::mood[] AS moods;

\echo '=== prepared statements, variables and gset'
PREPARE pick (int4) AS SELECT id, t, n20, m FROM samples WHERE id = $1;
EXECUTE pick(1);
EXECUTE pick(2);
EXECUTE pick(42);
DEALLOCATE pick;
SELECT 42 AS answer, 'forty two' AS words \gset
\echo answer=:answer words=:words
SELECT :answer + 1 AS next, :'words' AS quoted_var;
SELECT id, t, m FROM samples WHERE id = :answer - 41 \gdesc
SELECT id, t, m FROM samples WHERE id = :answer - 41 \g
SELECT count(*) AS n FROM samples \gset s_
\echo rows in samples: :s_n

\echo '=== date styles and time zones'
SET DateStyle = 'ISO, MDY';
SELECT d, ts, tstz FROM samples WHERE id IN (1, 2) ORDER BY id;
SET DateStyle = 'SQL, DMY';
SELECT d, ts, tstz FROM samples WHERE id IN (1, 2) ORDER BY id;
SET DateStyle = 'Postgres, MDY';
SELECT d, ts, tstz FROM samples WHERE id IN (1, 2) ORDER BY id;
SET DateStyle = 'German';
SELECT d, ts, tstz FROM samples WHERE id IN (1, 2) ORDER BY id;
SHOW DateStyle;
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'sql_standard';
SELECT iv FROM samples WHERE id IN (1, 2) ORDER BY id;
SET IntervalStyle = 'iso_8601';
SELECT iv FROM samples WHERE id IN (1, 2) ORDER BY id;
SET IntervalStyle = 'postgres_verbose';
SELECT iv FROM samples WHERE id IN (1, 2) ORDER BY id;
SET IntervalStyle = 'postgres';
SET TimeZone = 'America/New_York';
SHOW TimeZone;
SELECT id, tstz, tstz::date AS local_day FROM samples WHERE id IN (1, 2, 4) ORDER BY id;
SELECT '2024-03-10 01:59:59-05'::timestamptz AS before_dst, '2024-03-10 03:00:00-04'::timestamptz AS after_dst;
SET TimeZone = 'Asia/Kolkata';
SHOW TimeZone;
SELECT id, tstz, tstz::date AS local_day FROM samples WHERE id IN (1, 2, 4) ORDER BY id;
SET TimeZone = 'UTC';

\echo '=== errors'
\set VERBOSITY verbose
SELECT 1 / 0;
\echo sqlstate=:SQLSTATE
INSERT INTO events (id, name) VALUES (1, 'first');
INSERT INTO events (id, name) VALUES (1, 'again');
\echo sqlstate=:SQLSTATE
INSERT INTO events (name, qty) VALUES ('negative', -1);
\echo sqlstate=:SQLSTATE
INSERT INTO events (name) VALUES (NULL);
\echo sqlstate=:SQLSTATE
\set VERBOSITY default
SELEC 1;
\echo sqlstate=:SQLSTATE
SELECT id FROM samples WHERE;
\echo sqlstate=:SQLSTATE
SELECT * FROM no_such_table;
\echo sqlstate=:SQLSTATE
SELECT no_such_column FROM samples;
\echo sqlstate=:SQLSTATE
SELECT 'not a number'::int4;
\echo sqlstate=:SQLSTATE
SELECT '2024-02-30'::date;
\echo sqlstate=:SQLSTATE
SELECT 'nope'::mood;
\echo sqlstate=:SQLSTATE
\errverbose
\echo last error: :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT 'fine again' AS status;

\echo '=== transactions'
BEGIN;
INSERT INTO events (name, qty) VALUES ('in failed tx', 1);
SELECT 1 / 0;
SELECT 'ignored' AS status;
\echo sqlstate=:SQLSTATE
COMMIT;
SELECT count(*) AS failed_tx_rows FROM events WHERE name = 'in failed tx';
BEGIN;
INSERT INTO events (name, qty) VALUES ('rolled back', 1);
ROLLBACK;
BEGIN;
INSERT INTO events (name, qty) VALUES ('kept 1', 1);
SAVEPOINT s1;
INSERT INTO events (name, qty) VALUES ('kept 1', 2);
ROLLBACK TO SAVEPOINT s1;
INSERT INTO events (name, qty) VALUES ('kept 2', 2);
RELEASE SAVEPOINT s1;
COMMIT;
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO events (name, qty) VALUES ('kept 3', 3);
INSERT INTO events (name, qty) VALUES ('kept 3', 3);
INSERT INTO events (name, qty) VALUES ('kept 4', 4);
COMMIT;
\set ON_ERROR_ROLLBACK off
\set AUTOCOMMIT off
INSERT INTO events (name, qty) VALUES ('implicit tx', 5);
ROLLBACK;
\set AUTOCOMMIT on
SELECT id, name, qty, at FROM events ORDER BY id;
\set ON_ERROR_STOP on
\echo ON_ERROR_STOP=:ON_ERROR_STOP
SELECT 'no error while ON_ERROR_STOP is on' AS status;
\set ON_ERROR_STOP off
\echo ON_ERROR_STOP=:ON_ERROR_STOP

\echo '=== multi-statement queries'
SELECT 1; SELECT 2;
SELECT 1 AS one \; SELECT 2 AS two \; SELECT 'three' AS three;
SELECT 1 AS ok \; SELECT 1 / 0 \; SELECT 'not reached' AS status;
\echo sqlstate=:SQLSTATE

\echo '=== copy'
\copy (SELECT id, t, n, ts, ia FROM samples WHERE id IN (1, 2, 3) ORDER BY id) TO 'samples.csv' WITH (FORMAT csv, HEADER)
\copy copy_target FROM 'samples.csv' WITH (FORMAT csv, HEADER)
\copy (SELECT id + 10, t FROM samples ORDER BY id) TO 'samples.txt'
\copy copy_target (id, t) FROM 'samples.txt' WITH (FORMAT text)
\copy (SELECT id, t FROM samples WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE *)
COPY copy_target (id, t, n) FROM STDIN WITH (FORMAT csv);
100,from stdin,1.5
101,"quoted, comma",
\.
COPY copy_target (id, t) FROM STDIN;
102	text format
oops	bad id
\.
COPY (SELECT id, t, n, ts, ia FROM copy_target ORDER BY id, t) TO STDOUT WITH (FORMAT csv, HEADER);
SELECT count(*) AS copied FROM copy_target;

\echo '=== notices'
DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$;
DO $$ BEGIN RAISE NOTICE 'with detail' USING DETAIL = 'the detail', HINT = 'the hint'; END $$;
DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7 USING ERRCODE = 'P0001', HINT = 'raised on purpose'; END $$;
\echo sqlstate=:SQLSTATE
CREATE TABLE IF NOT EXISTS events (id int4);
DROP TABLE IF EXISTS no_such_table;
SET client_min_messages = warning;
DO $$ BEGIN RAISE NOTICE 'hidden'; RAISE WARNING 'shown'; END $$;
RESET client_min_messages;

\echo '=== catalog'
\dt
\d samples
\d+ samples
\d events
\d sample_moods
\dT mood
\dx plpgsql
SELECT enumlabel, enumsortorder FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
 WHERE t.typname = 'mood' ORDER BY enumsortorder;
SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull
  FROM pg_attribute WHERE attrelid = 'samples'::regclass AND attnum > 0 ORDER BY attnum;
SELECT typname, typlen, typcategory FROM pg_type
 WHERE oid IN ('int4'::regtype, 'numeric'::regtype, 'timestamptz'::regtype, 'jsonb'::regtype) ORDER BY typname;

\echo '=== output formats'
\pset format unaligned
SELECT id, t, m FROM samples WHERE id <= 2 ORDER BY id;
\pset format csv
SELECT id, t, ia FROM samples WHERE id <= 2 ORDER BY id;
\pset format aligned
\pset null '(null)'
SELECT id, i2, m FROM samples WHERE id = 3;
\pset null ''

\echo '=== end of session'
SELECT 'done' AS status;
