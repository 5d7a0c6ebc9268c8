"""psycopg 3 client for thermocline's client compatibility tests.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
PGPASSWORD) to a fresh, empty database and prints a transcript that must be the
same whether the server is PostgreSQL itself or thermocline in front of it.
It prints what psycopg decoded (type and repr), result metadata, command tags,
errors (SQLSTATE and diagnostics), notices and notifications; never pids, OIDs
of user objects, the database name or the clock.

Run it with tests/clients/run.sh psycopg.
"""

import datetime
import decimal
import hashlib
import sys
import threading
import time
import uuid

import psycopg
from psycopg import errors
from psycopg.types import TypeInfo
from psycopg.types.enum import EnumInfo, register_enum
from psycopg.types.json import Json, Jsonb

FIRST_USER_OID = 16384


def out(line=""):
    print(line, flush=True)


def oid_text(oid):
    if oid is None:
        return "None"
    return str(oid) if oid < FIRST_USER_OID else "<user type>"


def val(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"{type(v).__name__}:{bytes(v).hex()}"
    return f"{type(v).__name__}:{v!r}"


def section(title):
    out()
    out(f"=== {title}")


def print_error(e):
    if not isinstance(e, psycopg.Error) or e.sqlstate is None:
        # Raised by the client itself (e.g. a value it cannot decode).
        out(f"  client error {type(e).__name__}: {e}")
        return
    d = e.diag
    out(f"  error {type(e).__name__} sqlstate={e.sqlstate} severity={d.severity_nonlocalized}")
    out(f"    message: {d.message_primary}")
    for name in (
        "message_detail",
        "message_hint",
        "statement_position",
        "internal_position",
        "internal_query",
        "context",
        "schema_name",
        "table_name",
        "column_name",
        "datatype_name",
        "constraint_name",
    ):
        v = getattr(d, name)
        if v is not None:
            out(f"    {name}: {v}")


def print_description(cur):
    if cur.description is None:
        return
    for c in cur.description:
        out(
            f"  column {c.name}: type_code={oid_text(c.type_code)} internal_size={c.internal_size}"
            f" display_size={c.display_size} precision={c.precision} scale={c.scale}"
        )


def print_rows(cur, rows):
    names = [c.name for c in cur.description]
    for r in rows:
        out("  row: " + ", ".join(f"{n}={val(v)}" for n, v in zip(names, r)))


def print_result(cur, describe=True):
    while True:
        out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")
        if cur.description is not None:
            if describe:
                print_description(cur)
            try:
                print_rows(cur, cur.fetchall())
            except Exception as e:
                print_error(e)
        if not cur.nextset():
            break


def run(cur, query, params=None, describe=True, **kw):
    shown = query if isinstance(query, str) else query.as_string(cur.connection)
    out(f"> {shown}" + ("" if params is None else f"  -- params {params!r}"))
    try:
        cur.execute(query, params, **kw)
    except psycopg.Error as e:
        print_error(e)
        return False
    print_result(cur, describe)
    return True


def tx_status(conn):
    out(f"  transaction_status: {conn.info.transaction_status.name}")


def main():
    out(f"psycopg {psycopg.__version__}, libpq wrapper {psycopg.pq.__impl__}")
    conn = psycopg.connect("", autocommit=True)
    conn.add_notice_handler(
        lambda d: out(f"  notice: {d.severity_nonlocalized} {d.sqlstate} {d.message_primary}"
                      + (f" | detail: {d.message_detail}" if d.message_detail else "")
                      + (f" | hint: {d.message_hint}" if d.message_hint else ""))
    )
    cur = conn.cursor()

    section("server")
    for p in ("server_encoding", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone",
              "integer_datetimes", "standard_conforming_strings"):
        out(f"  parameter_status {p}: {conn.info.parameter_status(p)!r}")
    out(f"  info.encoding: {conn.info.encoding}  info.timezone: {conn.info.timezone!r}")
    run(cur, "SELECT current_setting('server_version_num')::int / 10000 AS server_major")
    run(cur, "SHOW TimeZone")
    run(cur, "SET extra_float_digits = 1")

    section("schema")
    run(cur, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    run(cur, """CREATE TABLE samples (
        id int4 PRIMARY KEY, i2 int2, i4 int4, i8 int8, n20 numeric(20,6), n numeric,
        f4 float4, f8 float8, b bool, t text, vc varchar(10), c char(5), by bytea, u uuid,
        d date, tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb,
        ia int4[], ta text[], m mood)""")
    run(cur, """CREATE TABLE events (
        id serial PRIMARY KEY, name text NOT NULL UNIQUE,
        qty int4 CHECK (qty >= 0) DEFAULT 0,
        at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00')""")
    run(cur, "CREATE TABLE copy_target (id int4, t text, n numeric, ts timestamp, ia int4[])")

    section("insert: literals")
    run(cur, r"""INSERT INTO samples VALUES
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
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""")

    section("insert: parameters")
    insert = """INSERT INTO samples (id, i2, i4, i8, n20, n, f4, f8, b, t, vc, c, by, u, d, tm, ts, tstz,
                                     iv, j, jb, ia, ta, m)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                        %s, %s, %s, %s, %s, %s)"""
    row4 = (
        4, 7, -70000, 2**40, decimal.Decimal("0.000001"),
        decimal.Decimal("123456789012345678901234567890.000000000000000000001"),
        0.1, 0.1 + 0.2, True, "param \u00e9 \U0001d11e", "vc", "xyz", b"\x00\x01\xfe\xff",
        uuid.UUID("12345678-1234-5678-1234-567812345678"), datetime.date(2000, 2, 29),
        datetime.time(23, 59, 59, 500000), datetime.datetime(2001, 9, 9, 1, 46, 40),
        datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
        datetime.timedelta(days=-2, seconds=3600, microseconds=5), Json({"k": [1, "two", None]}),
        Jsonb({"z": 1, "a": {"nested": True}}), [10, None, -30], ["x", "y z", None, ""], "ok",
    )
    run(cur, insert, row4)
    row5 = (5, None, None, None, decimal.Decimal("NaN"), decimal.Decimal("-0.5"), float("nan"),
            float("-inf"), False, "", "", "", b"", None, None, None, None, None, None, None, None,
            [], [], None)
    run(cur, insert, row5)
    # Binary parameters (%b) and explicit casts (typed parameters).
    run(cur, "INSERT INTO samples (id, i8, f8, t, by, ts, ia) VALUES (%b, %b, %b, %b, %b, %b, %b)",
        (6, -(2**63), 1e-310, "binary param", bytes(range(8)), datetime.datetime(1900, 1, 1), [1, 2, 3]))
    run(cur, "INSERT INTO samples (id, i2, n, d, tstz, iv, m) VALUES"
             " (%s::int4, %s::int2, %s::numeric, %s::date, %s::timestamptz, %s::interval, %s::mood)",
        ("7", "12", "1e-20", "2020-02-02", "2020-02-02 02:02:02+05:30", "1 day 02:00", "sad"))
    run(cur, "INSERT INTO events (name, qty) VALUES (%s, %s) RETURNING id, name, qty, at", ("first", 1))
    out("> executemany INSERT INTO events (name, qty) VALUES (%s, %s) [3 rows]")
    cur.executemany("INSERT INTO events (name, qty) VALUES (%s, %s)", [("a", 1), ("b", 2), ("c", 3)])
    out(f"  rowcount={cur.rowcount}")
    out("> executemany ... RETURNING id, name [2 rows], returning=True")
    cur.executemany("INSERT INTO events (name, qty) VALUES (%s, %s) RETURNING id, name",
                    [("d", 4), ("e", 5)], returning=True)
    while True:
        print_rows(cur, cur.fetchall())
        if not cur.nextset():
            break

    section("select (text results)")
    run(cur, "SELECT * FROM samples ORDER BY id")
    run(cur, "SELECT f4, f8, f8::text AS f8_text, n FROM samples WHERE id IN (2, 4, 5, 6) ORDER BY id")
    run(cur, "SELECT '{{1,2},{3,4}}'::int4[] AS matrix, ARRAY['happy', 'sad']::mood[] AS moods,"
             " ARRAY[1.5, NULL]::numeric[] AS nums, ARRAY['2024-01-01'::date] AS dates")
    for edge in ("'infinity'::date", "'-infinity'::timestamp", "'infinity'::timestamptz",
                 "'0044-03-15 BC'::date", "'294276-12-31 23:59:59.999999'::timestamp",
                 "'NaN'::numeric", "'Infinity'::numeric", "'-0'::float8", "'1e308'::float8 * 10",
                 "'24:00:00'::time", "'1 year'::interval * 10000", "'\\x'::bytea"):
        run(cur, f"SELECT {edge} AS v", describe=False)

    section("select (binary results)")
    bcur = conn.cursor(binary=True)
    run(bcur, "SELECT * FROM samples ORDER BY id", describe=False)
    run(bcur, "SELECT f4, f8, n FROM samples WHERE id IN (2, 4, 5) ORDER BY id", describe=False)

    section("introspection and registered enum")
    for name in ("mood", "int4", "numeric", "jsonb"):
        info = TypeInfo.fetch(conn, name)
        out(f"  TypeInfo {name}: name={info.name} oid={oid_text(info.oid)} array_oid={oid_text(info.array_oid)}")
    einfo = EnumInfo.fetch(conn, "mood")
    out(f"  EnumInfo mood: name={einfo.name} labels={einfo.labels}")
    register_enum(einfo, conn)
    run(cur, "SELECT id, m, ARRAY[m] AS ma FROM samples WHERE m IS NOT NULL ORDER BY id", describe=False)
    run(bcur, "SELECT id, m FROM samples WHERE m IS NOT NULL ORDER BY id", describe=False)
    run(cur, "SELECT * FROM samples WHERE false")

    section("same statement 10 times (prepared after 5 by psycopg)")
    out(f"  prepare_threshold={conn.prepare_threshold}")
    q = "SELECT id, i8, n20, f4, f8, ts, tstz, iv, ia, m FROM samples WHERE id = %s"
    for i in range(10):
        run(cur, q, (1 + i % 4,), describe=(i == 0))
    for i in range(10):
        run(bcur, "SELECT id, n, by, u, d, tm, jb, ta FROM samples WHERE id = %s", (1 + i % 4,),
            describe=False)
    run(cur, "SELECT %s::text AS explicitly_prepared", ("yes",), prepare=True)
    run(cur, "SELECT %s::int4 * 2 AS never_prepared", (21,), prepare=False)

    section("client-side binding (simple query protocol)")
    ccur = psycopg.ClientCursor(conn)
    out(f"  mogrify: {ccur.mogrify('SELECT %s, %s, %s', ('o''hara', None, [1, 2]))}")
    run(ccur, "SELECT %s AS s, %s AS n, %s AS d, %s AS b", ("it's", decimal.Decimal("1.10"),
                                                            datetime.date(2024, 5, 6), b"\x01"))
    run(ccur, "SELECT 1 AS a; SELECT 'two' AS b")

    section("server-side cursor with fetchmany")
    with conn.transaction():
        with conn.cursor(name="samples_cursor") as scur:
            scur.itersize = 2
            out("> DECLARE samples_cursor ... SELECT id, t, m FROM samples ORDER BY id")
            scur.execute("SELECT id, t, m FROM samples ORDER BY id")
            print_description(scur)
            while True:
                rows = scur.fetchmany(3)
                out(f"  fetchmany(3) -> {len(rows)} rows")
                if not rows:
                    break
                print_rows(scur, rows)
        with conn.cursor(name="scroll_cursor", scrollable=True) as scur:
            scur.execute("SELECT g FROM generate_series(1, 10) g")
            scur.scroll(7, mode="absolute")
            out(f"  scroll to 7 then fetchone: {scur.fetchone()!r}")
            scur.scroll(-3)
            out(f"  scroll -3 then fetchmany(2): {scur.fetchmany(2)!r}")

    section("pipeline")
    with conn.pipeline() as p:
        c1 = conn.execute("INSERT INTO events (name, qty) VALUES (%s, %s) RETURNING id", ("piped 1", 10))
        c2 = conn.execute("INSERT INTO events (name, qty) VALUES (%s, %s) RETURNING id", ("piped 2", 20))
        c3 = conn.execute("SELECT count(*) AS n, sum(qty) AS total FROM events")
        p.sync()
        out(f"  piped results: {c1.fetchone()!r} {c2.fetchone()!r} {c3.fetchone()!r}")
    try:
        with conn.pipeline():
            conn.execute("SELECT 'before' AS x")
            conn.execute("SELECT 1 / 0")
            conn.execute("SELECT 'after' AS x")
    except psycopg.Error as e:
        print_error(e)
    tx_status(conn)

    section("time zones and date styles")
    for tz in ("America/New_York", "Asia/Kolkata", "UTC"):
        run(cur, f"SET TimeZone = '{tz}'")
        out(f"  parameter_status TimeZone: {conn.info.parameter_status('TimeZone')!r}")
        run(cur, "SELECT id, tstz, tstz::text AS tstz_text FROM samples WHERE tstz IS NOT NULL ORDER BY id",
            describe=False)
        # A new binary cursor: a cursor keeps the time zone it first loaded with.
        run(conn.cursor(binary=True), "SELECT id, tstz FROM samples WHERE tstz IS NOT NULL ORDER BY id",
            describe=False)
    for style in ("SQL, DMY", "German", "Postgres, MDY", "ISO, MDY"):
        run(cur, f"SET DateStyle = '{style}'")
        out(f"  parameter_status DateStyle: {conn.info.parameter_status('DateStyle')!r}")
        run(cur, "SELECT d, ts, d::text AS d_text FROM samples WHERE id IN (1, 2) ORDER BY id", describe=False)
    for style in ("sql_standard", "iso_8601", "postgres"):
        run(cur, f"SET IntervalStyle = '{style}'")
        run(cur, "SELECT iv, iv::text AS iv_text FROM samples WHERE id IN (1, 2) ORDER BY id", describe=False)

    section("errors")
    run(cur, "SELECT 1 / 0")
    run(cur, "INSERT INTO events (name, qty) VALUES (%s, %s)", ("first", 1))
    run(cur, "INSERT INTO events (name, qty) VALUES (%s, %s)", ("negative", -1))
    run(cur, "SELEC 1")
    run(cur, "SELECT id FROM samples WHERE")
    run(cur, "SELECT * FROM no_such_table")
    run(cur, "SELECT %s::int4", ("not a number",))
    run(cur, "SELECT 'nope'::mood")
    run(cur, "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7 USING ERRCODE = 'P0001', HINT = 'raised on purpose'; END $$")
    run(cur, "SELECT 'fine again' AS status")
    tx_status(conn)

    section("transactions")
    try:
        with conn.transaction():
            run(cur, "INSERT INTO events (name, qty) VALUES ('in failed tx', 1)")
            tx_status(conn)
            cur.execute("SELECT 1 / 0")
    except errors.DivisionByZero as e:
        print_error(e)
    tx_status(conn)
    run(cur, "BEGIN")
    run(cur, "INSERT INTO events (name, qty) VALUES ('also failed', 1)")
    run(cur, "SELECT 1 / 0")
    tx_status(conn)
    run(cur, "SELECT 'ignored' AS status")
    run(cur, "ROLLBACK")
    tx_status(conn)
    run(cur, "SELECT count(*) AS failed_rows FROM events WHERE name IN ('in failed tx', 'also failed')")
    with conn.transaction():
        run(cur, "INSERT INTO events (name, qty) VALUES ('kept 1', 1)")
        try:
            with conn.transaction():
                run(cur, "INSERT INTO events (name, qty) VALUES ('lost', 1)")
                cur.execute("INSERT INTO events (name, qty) VALUES ('kept 1', 2)")
        except errors.UniqueViolation as e:
            print_error(e)
        run(cur, "INSERT INTO events (name, qty) VALUES ('kept 2', 2)")
    run(cur, "BEGIN")
    run(cur, "SAVEPOINT s1")
    run(cur, "INSERT INTO events (name, qty) VALUES ('kept 1', 3)")
    run(cur, "ROLLBACK TO SAVEPOINT s1")
    run(cur, "INSERT INTO events (name, qty) VALUES ('kept 3', 3)")
    run(cur, "COMMIT")
    conn.autocommit = False
    run(cur, "INSERT INTO events (name, qty) VALUES ('implicit tx', 9)")
    tx_status(conn)
    conn.rollback()
    conn.autocommit = True
    run(cur, "SELECT id, name, qty, at FROM events ORDER BY id", describe=False)

    section("multi-statement simple query")
    run(cur, "SELECT 1 AS a; SELECT 2 AS b")
    run(cur, "CREATE TABLE multi (x int); INSERT INTO multi VALUES (1), (2); SELECT sum(x) AS total FROM multi; DROP TABLE multi")
    run(cur, "SELECT 'ok' AS first; SELECT 1 / 0; SELECT 'not reached'")
    tx_status(conn)

    section("copy")
    out("> COPY copy_target (id, t, n, ts, ia) FROM STDIN  (write_row, text)")
    with cur.copy("COPY copy_target (id, t, n, ts, ia) FROM STDIN") as cp:
        cp.write_row((1, "tab\there", decimal.Decimal("1.25"), datetime.datetime(2020, 1, 2, 3, 4, 5), [1, None]))
        cp.write_row((2, None, None, None, None))
        cp.write_row((3, "back\\slash \u2603", decimal.Decimal("-7"), None, []))
    out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")
    out("> COPY copy_target FROM STDIN (FORMAT BINARY)  (write_row, binary)")
    with cur.copy("COPY copy_target (id, t, n, ts, ia) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["int4", "text", "numeric", "timestamp", "int4[]"])
        cp.write_row((4, "binary", decimal.Decimal("3.5"), datetime.datetime(1999, 12, 31), [4, 5]))
        cp.write_row((5, "", decimal.Decimal("0"), None, None))
    out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")
    out("> COPY copy_target (id, t) FROM STDIN (FORMAT csv)  (write, raw)")
    with cur.copy("COPY copy_target (id, t) FROM STDIN (FORMAT csv)") as cp:
        cp.write(b'6,"quoted, comma"\n7,plain\n')
    out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")
    out("> COPY copy_target (id, t) FROM STDIN  (bad row)")
    try:
        with cur.copy("COPY copy_target (id, t) FROM STDIN") as cp:
            cp.write(b"8\tfine\noops\tbad id\n")
    except psycopg.Error as e:
        print_error(e)
    out("> COPY copy_target (id, t) FROM STDIN  (client aborts: CopyFail)")
    try:
        with cur.copy("COPY copy_target (id, t) FROM STDIN") as cp:
            cp.write_row((9, "never"))
            raise RuntimeError("client gave up")
    except psycopg.Error as e:
        print_error(e)
    except RuntimeError as e:
        out(f"  client exception: {e}")
    tx_status(conn)
    out("> COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)  (raw blocks)")
    data = b""
    with cur.copy("COPY (SELECT id, t, n, ts, ia FROM copy_target ORDER BY id) TO STDOUT (FORMAT csv, HEADER)") as cp:
        for block in cp:
            data += bytes(block)
    for line in data.decode().splitlines():
        out(f"  | {line}")
    out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")
    out("> COPY copy_target TO STDOUT  (rows, text)")
    with cur.copy("COPY copy_target (id, t, n) TO STDOUT") as cp:
        for row in cp.rows():
            out(f"  copy row: {row!r}")
    out("> COPY copy_target TO STDOUT (FORMAT BINARY)  (rows, binary)")
    with cur.copy("COPY copy_target (id, t, n, ts, ia) TO STDOUT (FORMAT BINARY)") as cp:
        cp.set_types(["int4", "text", "numeric", "timestamp", "int4[]"])
        for row in cp.rows():
            out(f"  copy row: {', '.join(val(v) for v in row)}")
    out(f"  status: {cur.statusmessage} rowcount={cur.rowcount}")

    section("notices")
    run(cur, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
    run(cur, "DO $$ BEGIN RAISE NOTICE 'with detail' USING DETAIL = 'the detail', HINT = 'the hint'; END $$")
    run(cur, "CREATE TABLE IF NOT EXISTS events (id int4)")
    run(cur, "DROP TABLE IF EXISTS no_such_table")
    run(cur, "SELECT 'after notices' AS status")

    section("listen / notify")
    notes = []
    conn.add_notify_handler(notes.append)

    def show_notifications(expected):
        # A notification reaches the client after the ReadyForQuery of the
        # statement that caused it: read on with round trips until it is there.
        deadline = time.monotonic() + 5
        conn.execute("SELECT 1")
        while len(notes) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            conn.execute("SELECT 1")
        for n in notes:
            out(f"  notification: channel={n.channel!r} payload={n.payload!r}")
        out(f"  ({len(notes)} notifications)")
        notes.clear()

    run(cur, "LISTEN jobs")
    run(cur, 'LISTEN "Mixed Case"')
    run(cur, "NOTIFY jobs, 'first payload'")
    run(cur, "SELECT pg_notify('jobs', 'second payload \u00e9')")
    run(cur, """NOTIFY "Mixed Case", ''""")
    show_notifications(3)
    with conn.transaction():
        run(cur, "NOTIFY jobs, 'committed'")
        run(cur, "NOTIFY jobs, 'committed'")
        run(cur, "NOTIFY jobs, 'committed too'")
    show_notifications(2)
    with conn.transaction():
        run(cur, "NOTIFY jobs, 'rolled back'")
        raise psycopg.Rollback()
    other = psycopg.connect("", autocommit=True)
    out("> (second connection) NOTIFY jobs, 'from another session'")
    other.execute("NOTIFY jobs, 'from another session'")
    other.close()
    show_notifications(1)
    run(cur, "UNLISTEN *")
    run(cur, "NOTIFY jobs, 'nobody listens'")
    show_notifications(0)

    section("cancel")
    out("> SELECT pg_sleep(10)  -- conn.cancel_safe() from another thread after 0.5 s")
    timer = threading.Timer(0.5, conn.cancel_safe)
    started = time.monotonic()
    timer.start()
    try:
        cur.execute("SELECT pg_sleep(10)")
        out("  not cancelled")
    except psycopg.Error as e:
        print_error(e)
    timer.join()
    out(f"  returned within 5 s: {time.monotonic() - started < 5}")
    tx_status(conn)
    run(cur, "SELECT 'still usable' AS status")

    section("large values")
    out("> SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    h = hashlib.sha256()
    n = 0
    for g, m in cur:
        h.update(f"{g}:{m}\n".encode())
        n += 1
    out(f"  rows={n} sha256={h.hexdigest()}")
    out("> SELECT repeat('abc', 400000) AS big, %b::bytea AS echoed")
    big_in = bytes(range(256)) * 4096
    cur.execute("SELECT repeat('abc', 400000) AS big, %b::bytea AS echoed", (big_in,))
    big, echoed = cur.fetchone()
    out(f"  big: len={len(big)} sha256={hashlib.sha256(big.encode()).hexdigest()}")
    out(f"  echoed bytea equal: {bytes(echoed) == big_in} len={len(echoed)}")

    section("end")
    run(cur, "SELECT 'done' AS status")
    conn.close()
    out(f"  closed: {conn.closed}")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
