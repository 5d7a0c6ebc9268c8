"""asyncpg client for thermocline's client compatibility tests.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
PGPASSWORD) to a fresh, empty database and prints a transcript that must be the
same whether the server is PostgreSQL itself or thermocline in front of it.
asyncpg always uses the extended protocol with named prepared statements and
binary results, and introspects non-built-in types through the catalog.
It prints what asyncpg decoded (type and repr), statement attributes, command
tags, errors (SQLSTATE and diagnostics), notices and notifications; never
pids, OIDs of user objects, the database name or the clock.

Run it with tests/clients/run.sh asyncpg.
"""

import asyncio
import datetime
import decimal
import hashlib
import io
import sys
import time
import uuid

import asyncpg

FIRST_USER_OID = 16384
ERROR_FIELDS = (
    "detail",
    "hint",
    "position",
    "internal_position",
    "internal_query",
    "context",
    "schema_name",
    "table_name",
    "column_name",
    "data_type_name",
    "constraint_name",
)


def out(line=""):
    print(line, flush=True)


def oid_text(oid):
    return str(oid) if oid < FIRST_USER_OID else "<user type>"


def val(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"{type(v).__name__}:{bytes(v).hex()}"
    return f"{type(v).__name__}:{v!r}"


def section(title):
    out()
    out(f"=== {title}")


def print_error(e):
    if isinstance(e, asyncpg.PostgresError) and getattr(e, "severity", None):
        out(f"  error {type(e).__name__} sqlstate={e.sqlstate} severity={e.severity_en}")
        out(f"    message: {e.message}")
        for name in ERROR_FIELDS:
            v = getattr(e, name, None)
            if v is not None:
                out(f"    {name}: {v}")
    else:
        # Raised by the client itself (e.g. a parameter it cannot encode).
        out(f"  client error {type(e).__name__}: {e}")


def print_records(records):
    for r in records:
        out("  row: " + ", ".join(f"{k}={val(v)}" for k, v in r.items()))


def type_text(t):
    return f"{t.name} (oid={oid_text(t.oid)} kind={t.kind} schema={t.schema})"


class Events:
    """Notices, printed in the order they arrived, and notifications.

    A notice arrives before the end of the statement that raised it, so it is
    printed right after that statement. A notification arrives after the
    statement's ReadyForQuery, at a moment that varies: notifications are only
    printed by show_notifications(), which waits for them.
    """

    def __init__(self):
        self.items = []
        self.notes = []

    def on_log(self, _conn, msg):
        line = f"  notice: {msg.severity_en} {msg.sqlstate} {msg.message}"
        if msg.detail:
            line += f" | detail: {msg.detail}"
        if msg.hint:
            line += f" | hint: {msg.hint}"
        self.items.append(line)

    def on_notify(self, _conn, _pid, channel, payload):
        self.notes.append(f"  notification: channel={channel!r} payload={payload!r}")

    async def flush(self):
        # Listener callbacks run from the event loop: let them run first.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        for line in self.items:
            out(line)
        self.items.clear()


EV = Events()


async def run(conn, query, *args, kind="fetch", **kw):
    out(f"> {query}" + (f"  -- args {args!r}" if args else ""))
    try:
        if kind == "execute":
            res = await conn.execute(query, *args, **kw)
            await EV.flush()
            out(f"  status: {res}")
        else:
            res = await conn.fetch(query, *args, **kw)
            await EV.flush()
            print_records(res)
        return res
    except Exception as e:  # noqa: BLE001 - errors are part of the transcript
        await EV.flush()
        print_error(e)
        return None


async def describe(stmt):
    for p_i, t in enumerate(stmt.get_parameters(), 1):
        out(f"  parameter ${p_i}: {type_text(t)}")
    for a in stmt.get_attributes():
        out(f"  attribute {a.name}: {type_text(a.type)}")


async def main():
    out(f"asyncpg {asyncpg.__version__}")
    conn = await asyncpg.connect()
    conn.add_log_listener(EV.on_log)

    section("server")
    s = conn.get_settings()
    for p in ("server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
              "integer_datetimes", "standard_conforming_strings"):
        out(f"  setting {p}: {getattr(s, p, None)!r}")
    await run(conn, "SELECT current_setting('server_version_num')::int / 10000 AS server_major")
    await run(conn, "SHOW TimeZone")
    await run(conn, "SET extra_float_digits = 1", kind="execute")

    section("schema")
    await run(conn, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')", kind="execute")
    await run(conn, """CREATE TABLE samples (
        id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, n20 numeric(20,6), n numeric,
        f4 float4, f8 float8, b bool, t text, vc varchar(10), c char(5), by bytea, u uuid,
        d date, tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb,
        ia int4[], ta text[], m mood)""", kind="execute")
    await run(conn, """CREATE TABLE events (
        id serial PRIMARY KEY, name text NOT NULL UNIQUE,
        qty int4 CHECK (qty >= 0) DEFAULT 0,
        at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00')""", kind="execute")
    await run(conn, "CREATE TABLE copy_target (id int4, t text, n numeric, ts timestamp, ia int4[])",
              kind="execute")

    section("insert: literals (simple query)")
    await run(conn, r"""INSERT INTO samples VALUES
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
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""", kind="execute")

    section("insert: parameters (types inferred by the server)")
    insert = """INSERT INTO samples (id, i2, i4, i8, n20, n, f4, f8, b, t, vc, c, by, u, d, tm, ts, tstz,
                                     iv, j, jb, ia, ta, m)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                        $19, $20, $21, $22, $23, $24)"""
    stmt = await conn.prepare(insert)
    await describe(stmt)
    row4 = (
        4, 7, -70000, 2**40, decimal.Decimal("0.000001"),
        decimal.Decimal("123456789012345678901234567890.000000000000000000001"),
        0.1, 0.1 + 0.2, True, "param \u00e9 \U0001d11e", "vc", "xyz", b"\x00\x01\xfe\xff",
        uuid.UUID("12345678-1234-5678-1234-567812345678"), datetime.date(2000, 2, 29),
        datetime.time(23, 59, 59, 500000), datetime.datetime(2001, 9, 9, 1, 46, 40),
        datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
        datetime.timedelta(days=-2, seconds=3600, microseconds=5), '{"k": [1, "two", null]}',
        '{"z": 1, "a": {"nested": true}}', [10, None, -30], ["x", "y z", None, ""], "ok",
    )
    out(f"> prepared INSERT ... -- args {row4!r}")
    await stmt.fetch(*row4)
    out(f"  status: {stmt.get_statusmsg()}")
    row5 = (5, None, None, None, decimal.Decimal("NaN"), decimal.Decimal("-0.5"), float("nan"),
            float("-inf"), False, "", "", "", b"", None, None, None, None, None, None, None, None,
            [], [], None)
    await run(conn, insert, *row5, kind="execute")
    await run(conn, "INSERT INTO samples (id, i8, f8, t, by, ts, ia) VALUES ($1, $2, $3, $4, $5, $6, $7)",
              6, -(2**63), 1e-310, "more params", bytes(range(8)), datetime.datetime(1900, 1, 1), [1, 2, 3],
              kind="execute")
    await run(conn, "INSERT INTO samples (id, i2, n, d, tstz, iv, m) VALUES"
                    " ($1::text::int4, $2::text::int2, $3::text::numeric, $4::text::date,"
                    " $5::text::timestamptz, $6::text::interval, $7::text::mood)",
              "7", "12", "1e-20", "2020-02-02", "2020-02-02 02:02:02+05:30", "1 day 02:00", "sad",
              kind="execute")
    # asyncpg checks Python types against the server-inferred parameter types.
    await run(conn, "SELECT $1::int4 AS v", "42")
    await run(conn, "SELECT $1::int2 AS v", 70000)
    await run(conn, "INSERT INTO events (name, qty) VALUES ($1, $2) RETURNING id, name, qty, at", "first", 1)
    out("> executemany INSERT INTO events (name, qty) VALUES ($1, $2) [3 rows]")
    await conn.executemany("INSERT INTO events (name, qty) VALUES ($1, $2)", [("a", 1), ("b", 2), ("c", 3)])
    out("> executemany with a duplicate in the middle")
    try:
        await conn.executemany("INSERT INTO events (name, qty) VALUES ($1, $2)", [("d", 4), ("a", 5), ("e", 6)])
    except Exception as e:  # noqa: BLE001
        print_error(e)
    await run(conn, "SELECT name FROM events ORDER BY id")

    section("select (binary results)")
    stmt = await conn.prepare("SELECT * FROM samples ORDER BY id")
    await describe(stmt)
    out("> SELECT * FROM samples ORDER BY id")
    print_records(await stmt.fetch())
    await run(conn, "SELECT f4, f8, f8::text AS f8_text, n FROM samples WHERE id IN (2, 4, 5, 6) ORDER BY id")
    await run(conn, "SELECT '{{1,2},{3,4}}'::int4[] AS matrix, ARRAY['happy', 'sad']::mood[] AS moods,"
                    " ARRAY[1.5, NULL]::numeric[] AS nums, '[0:1]={7,8}'::int4[] AS lower_bound")
    for edge in ("'infinity'::date", "'-infinity'::timestamp", "'infinity'::timestamptz",
                 "'0044-03-15 BC'::date", "'294276-12-31 23:59:59.999999'::timestamp",
                 "'NaN'::numeric", "'Infinity'::numeric", "'-0'::float8", "'24:00:00'::time",
                 "'1 year'::interval * 10000", "'1 mon'::interval", "'\\x'::bytea",
                 "'(1,2)'::point", "'192.168.0.1/24'::inet", "'[1,5)'::int4range",
                 "'{\"a\": 1}'::json", "'a & b'::tsquery", "B'1011'::bit(4)"):
        await run(conn, f"SELECT {edge} AS v")

    section("statement introspection")
    stmt = await conn.prepare("SELECT id, m, ARRAY[m] AS ma, ia, jb, $1::text AS p FROM samples WHERE id = $2")
    await describe(stmt)
    out(f"> fetchrow -- args ('x', 1)")
    print_records([await stmt.fetchrow("x", 1)])
    out(f"  statusmsg after fetchrow (portal suspended at 1 row): {stmt.get_statusmsg()}")
    stmt = await conn.prepare("SELECT * FROM samples WHERE 1 = 0")
    await describe(stmt)

    section("same statement 10 times")
    stmt = await conn.prepare("SELECT id, i8, n20, f4, f8, ts, tstz, iv, ia, m FROM samples WHERE id = $1")
    for i in range(10):
        out(f"> prepared fetch -- args ({1 + i % 4},)")
        print_records(await stmt.fetch(1 + i % 4))
    for i in range(10):
        await run(conn, "SELECT id, n, by, u, d, tm, jb, ta FROM samples WHERE id = $1", 1 + i % 4)

    section("cursors (portals with a row limit)")
    async with conn.transaction():
        out("> cursor SELECT id, t, m FROM samples ORDER BY id, prefetch=2")
        async for r in conn.cursor("SELECT id, t, m FROM samples ORDER BY id", prefetch=2):
            print_records([r])
        cur = await conn.cursor("SELECT g FROM generate_series(1, 10) g")
        out(f"  fetch(3): {[r['g'] for r in await cur.fetch(3)]}")
        out(f"  forward(2): {await cur.forward(2)}")
        out(f"  fetchrow: {dict(await cur.fetchrow())}")
        out(f"  fetch(100): {[r['g'] for r in await cur.fetch(100)]}")

    section("time zones and date styles")
    for tz in ("America/New_York", "Asia/Kolkata", "UTC"):
        await run(conn, f"SET TimeZone = '{tz}'", kind="execute")
        out(f"  setting TimeZone: {conn.get_settings().TimeZone!r}")
        await run(conn, "SELECT id, tstz, tstz::text AS tstz_text FROM samples WHERE tstz IS NOT NULL ORDER BY id")
    for style in ("SQL, DMY", "German", "ISO, MDY"):
        await run(conn, f"SET DateStyle = '{style}'", kind="execute")
        out(f"  setting DateStyle: {conn.get_settings().DateStyle!r}")
        await run(conn, "SELECT d, ts, d::text AS d_text FROM samples WHERE id IN (1, 2) ORDER BY id")
    await run(conn, "SET IntervalStyle = 'iso_8601'", kind="execute")
    await run(conn, "SELECT iv, iv::text AS iv_text FROM samples WHERE id IN (1, 2) ORDER BY id")
    await run(conn, "RESET IntervalStyle", kind="execute")

    section("errors")
    await run(conn, "SELECT 1 / 0")
    await run(conn, "INSERT INTO events (name, qty) VALUES ($1, $2)", "first", 1, kind="execute")
    await run(conn, "INSERT INTO events (name, qty) VALUES ($1, $2)", "negative", -1, kind="execute")
    await run(conn, "SELEC 1")
    await run(conn, "SELEC 1", kind="execute")
    await run(conn, "SELECT id FROM samples WHERE")
    await run(conn, "SELECT * FROM no_such_table")
    await run(conn, "SELECT $1::text::int4", "not a number")
    await run(conn, "SELECT 'nope'::mood")
    await run(conn, "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7 USING ERRCODE = 'P0001', HINT = 'raised on purpose'; END $$",
              kind="execute")
    await run(conn, "SELECT 'fine again' AS status")

    section("transactions")
    try:
        async with conn.transaction():
            await run(conn, "INSERT INTO events (name, qty) VALUES ('in failed tx', 1)", kind="execute")
            out(f"  in transaction: {conn.is_in_transaction()}")
            await conn.execute("SELECT 1 / 0")
    except asyncpg.PostgresError as e:
        print_error(e)
    out(f"  in transaction: {conn.is_in_transaction()}")
    await run(conn, "BEGIN", kind="execute")
    await run(conn, "INSERT INTO events (name, qty) VALUES ('also failed', 1)", kind="execute")
    await run(conn, "SELECT 1 / 0")
    await run(conn, "SELECT 'ignored' AS status")
    await run(conn, "ROLLBACK", kind="execute")
    await run(conn, "SELECT count(*) AS failed_rows FROM events WHERE name IN ('in failed tx', 'also failed')")
    async with conn.transaction(isolation="repeatable_read"):
        await run(conn, "SHOW transaction_isolation")
        await run(conn, "INSERT INTO events (name, qty) VALUES ('kept 1', 1)", kind="execute")
        try:
            async with conn.transaction():
                await run(conn, "INSERT INTO events (name, qty) VALUES ('lost', 1)", kind="execute")
                await conn.execute("INSERT INTO events (name, qty) VALUES ('kept 1', 2)")
        except asyncpg.UniqueViolationError as e:
            print_error(e)
        await run(conn, "INSERT INTO events (name, qty) VALUES ('kept 2', 2)", kind="execute")
    async with conn.transaction(readonly=True):
        await run(conn, "INSERT INTO events (name) VALUES ('read only')", kind="execute")
    await run(conn, "SELECT id, name, qty, at FROM events ORDER BY id")

    section("multi-statement simple query")
    await run(conn, "SELECT 1 AS a; SELECT 2 AS b", kind="execute")
    await run(conn, "CREATE TABLE multi (x int); INSERT INTO multi VALUES (1), (2); DROP TABLE multi", kind="execute")
    await run(conn, "SELECT 'ok'; SELECT 1 / 0; SELECT 'not reached'", kind="execute")
    out(f"  in transaction: {conn.is_in_transaction()}")

    section("copy")
    out("> copy_records_to_table copy_target (binary COPY FROM STDIN)")
    res = await conn.copy_records_to_table(
        "copy_target",
        columns=["id", "t", "n", "ts", "ia"],
        records=[
            (1, "tab\there", decimal.Decimal("1.25"), datetime.datetime(2020, 1, 2, 3, 4, 5), [1, None]),
            (2, None, None, None, None),
            (3, "back\\slash \u2603", decimal.Decimal("-7"), None, []),
        ],
    )
    out(f"  status: {res}")
    out("> copy_to_table copy_target (csv COPY FROM STDIN)")
    res = await conn.copy_to_table("copy_target", source=io.BytesIO(b'6,"quoted, comma"\n7,plain\n'),
                                   columns=["id", "t"], format="csv")
    out(f"  status: {res}")
    out("> copy_to_table copy_target (bad row)")
    try:
        await conn.copy_to_table("copy_target", source=io.BytesIO(b"8\tfine\noops\tbad id\n"), columns=["id", "t"])
    except Exception as e:  # noqa: BLE001
        print_error(e)
    out("> copy_from_query (csv, header)")
    buf = io.BytesIO()
    res = await conn.copy_from_query("SELECT id, t, n, ts, ia FROM copy_target ORDER BY id", output=buf,
                                     format="csv", header=True)
    for line in buf.getvalue().decode().splitlines():
        out(f"  | {line}")
    out(f"  status: {res}")
    out("> copy_from_query with arguments")
    buf = io.BytesIO()
    res = await conn.copy_from_query("SELECT id, t FROM copy_target WHERE id > $1 ORDER BY id", 5, output=buf)
    for line in buf.getvalue().decode().splitlines():
        out(f"  | {line}")
    out(f"  status: {res}")
    out("> copy_from_table copy_target (text)")
    buf = io.BytesIO()
    res = await conn.copy_from_table("copy_target", columns=["id", "t", "n"], output=buf)
    out(f"  {len(buf.getvalue().splitlines())} lines, sha256={hashlib.sha256(buf.getvalue()).hexdigest()}")
    out(f"  status: {res}")

    section("notices")
    await run(conn, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$", kind="execute")
    await run(conn, "DO $$ BEGIN RAISE NOTICE 'with detail' USING DETAIL = 'the detail', HINT = 'the hint'; END $$",
              kind="execute")
    await run(conn, "CREATE TABLE IF NOT EXISTS events (id int4)", kind="execute")
    await run(conn, "DROP TABLE IF EXISTS no_such_table", kind="execute")
    await run(conn, "SELECT 'after notices' AS status")

    section("listen / notify")

    async def show_notifications(expected):
        # A notification comes after the ReadyForQuery of the statement that
        # caused it; asyncpg reads it in the background.
        deadline = time.monotonic() + 5
        await conn.execute("SELECT 1")
        while len(EV.notes) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await EV.flush()
        for line in EV.notes:
            out(line)
        out(f"  ({len(EV.notes)} notifications)")
        EV.notes.clear()

    out("> add_listener jobs, add_listener 'Mixed Case'")
    await conn.add_listener("jobs", EV.on_notify)
    await conn.add_listener("Mixed Case", EV.on_notify)
    await run(conn, "NOTIFY jobs, 'first payload'", kind="execute")
    await run(conn, "SELECT pg_notify('jobs', $1)", "second payload \u00e9")
    await run(conn, """NOTIFY "Mixed Case", ''""", kind="execute")
    await show_notifications(3)
    async with conn.transaction():
        await run(conn, "NOTIFY jobs, 'committed'", kind="execute")
        await run(conn, "NOTIFY jobs, 'committed'", kind="execute")
        await run(conn, "NOTIFY jobs, 'committed too'", kind="execute")
    await show_notifications(2)
    tr = conn.transaction()
    await tr.start()
    await run(conn, "NOTIFY jobs, 'rolled back'", kind="execute")
    await tr.rollback()
    other = await asyncpg.connect()
    out("> (second connection) NOTIFY jobs, 'from another session'")
    await other.execute("NOTIFY jobs, 'from another session'")
    await other.close()
    await show_notifications(1)
    out("> remove_listener jobs, remove_listener 'Mixed Case'")
    await conn.remove_listener("jobs", EV.on_notify)
    await conn.remove_listener("Mixed Case", EV.on_notify)
    await run(conn, "NOTIFY jobs, 'nobody listens'", kind="execute")
    await show_notifications(0)

    section("cancel")
    out("> SELECT pg_sleep(10)  -- timeout=0.5: asyncpg sends a CancelRequest")
    started = time.monotonic()
    try:
        await conn.fetch("SELECT pg_sleep(10)", timeout=0.5)
        out("  not cancelled")
    except asyncio.TimeoutError as e:
        out(f"  client error {type(e).__name__}")
    except Exception as e:  # noqa: BLE001
        print_error(e)
    await run(conn, "SELECT 'still usable' AS status")
    out(f"  returned within 5 s: {time.monotonic() - started < 5}")
    out(f"  in transaction: {conn.is_in_transaction()}")

    section("large values")
    out("> SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    rows = await conn.fetch("SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    h = hashlib.sha256()
    for g, m in rows:
        h.update(f"{g}:{m}\n".encode())
    out(f"  rows={len(rows)} sha256={h.hexdigest()}")
    big_in = bytes(range(256)) * 4096
    out("> SELECT repeat('abc', 400000) AS big, $1::bytea AS echoed")
    r = await conn.fetchrow("SELECT repeat('abc', 400000) AS big, $1::bytea AS echoed", big_in)
    out(f"  big: len={len(r['big'])} sha256={hashlib.sha256(r['big'].encode()).hexdigest()}")
    out(f"  echoed bytea equal: {r['echoed'] == big_in} len={len(r['echoed'])}")

    section("connection reset and pool")
    await run(conn, "SET TimeZone = 'Asia/Tokyo'", kind="execute")
    out("> reset()  (what a pool does on release)")
    await conn.reset()
    await run(conn, "SHOW TimeZone")
    await conn.close()
    out(f"  closed: {conn.is_closed()}")
    pool = await asyncpg.create_pool(min_size=1, max_size=2)
    async with pool.acquire() as c1, pool.acquire() as c2:
        out(f"  pool: {await c1.fetchval('SELECT count(*) FROM samples')} samples,"
            f" {await c2.fetchval('SELECT count(*) FROM events')} events")
    async with pool.acquire() as c1:
        out(f"  pool again: {await c1.fetchval('SELECT $1::text', 'reused')}")
    await pool.close()

    section("end")
    out("  done")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
