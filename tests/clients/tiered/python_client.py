"""Reads of a tiered table with psycopg 3 and asyncpg.

Runs the statements of queries.txt (one per line; $1 is bound to the value
below) against the server named by the libpq environment and prints every
value as the driver decoded it. Run against PostgreSQL holding all rows and
through thermocline in front of a tiered copy, the transcripts must match.

    python_client.py psycopg|asyncpg
"""

import asyncio
import io
import datetime
import os
import sys

PARAMS = [
    None,
    97,
    datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc),
    None,
    15,
    7,
]

# Copied out by each driver's COPY support.
COPY_QUERY = "SELECT id, created_at, amount, status, note FROM orders WHERE id % 97 = 0 ORDER BY id"


def queries():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "queries.txt")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def show(rows):
    for row in rows:
        print("  " + " | ".join(f"{type(v).__name__}:{v!r}" for v in row), flush=True)


def server_side_cursor(conn, name):
    """Reads COPY_QUERY through a named (server-side) cursor: some rows, a
    scroll, the rest."""
    with conn.transaction():
        with conn.cursor(name=name) as cur:
            cur.execute(COPY_QUERY)
            show(cur.fetchmany(5))
            cur.scroll(3)
            show(cur.fetchall())


def run_psycopg():
    import psycopg

    with psycopg.connect("") as conn:
        conn.autocommit = True
        for binary in (False, True):
            print(f"=== psycopg, {'binary' if binary else 'text'} results")
            for i, sql in enumerate(queries()):
                print(f"> {sql}")
                sql = sql.replace("%", "%%").replace("$1", "%s")
                args = () if PARAMS[i] is None else (PARAMS[i],)
                with conn.cursor(binary=binary) as cur:
                    cur.execute(sql, args)
                    print("  columns: " + ", ".join(d.name for d in cur.description))
                    show(cur.fetchall())
        print("=== psycopg, COPY TO STDOUT as text rows and in binary")
        with conn.cursor() as cur:
            with cur.copy(COPY_QUERY.join(["COPY (", ") TO STDOUT"])) as copy:
                show(copy.rows())
            with cur.copy(COPY_QUERY.join(["COPY (", ") TO STDOUT (FORMAT binary)"])) as copy:
                copy.set_types(["bigint", "timestamptz", "numeric", "text", "varchar"])
                show(copy.rows())
        print("=== psycopg, a server-side cursor")
        server_side_cursor(conn, "history")
        print("=== psycopg, a server-side cursor in a read-only transaction")
        conn.read_only = True
        server_side_cursor(conn, "history_read_only")
        conn.read_only = False
        print("=== psycopg, several statements in one query")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), sum(amount) FROM orders; "
                "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1"
            )
            show(cur.fetchall())
            cur.nextset()
            show(cur.fetchall())
        print("=== psycopg, INSERT … SELECT with parameters")
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE per_status (status text, n bigint, since text)")
            cur.execute(
                "INSERT INTO per_status SELECT status, count(*), %s FROM orders "
                "WHERE amount > %s GROUP BY 1 ORDER BY 1 RETURNING status, n",
                ("all", 10),
            )
            show(cur.fetchall())
            cur.execute("SELECT * FROM per_status ORDER BY 1")
            show(cur.fetchall())
        print("=== psycopg, UPDATE … FROM with parameters")
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE per_status p SET since = %s FROM orders o "
                "WHERE o.status = p.status AND o.id = %s RETURNING p.status, p.since",
                ("old", 2001),
            )
            show(cur.fetchall())
        print("=== psycopg, a prepared statement run 7 times")
        sql = queries()[1].replace("%", "%%").replace("$1", "%s")
        for n in range(7):
            with conn.cursor() as cur:
                cur.execute(sql, (89 + n,), prepare=True)
                print(f"  run {n + 1}: {len(cur.fetchall())} rows")


async def run_asyncpg():
    import asyncpg

    conn = await asyncpg.connect()
    try:
        print("=== asyncpg (binary results)")
        for i, sql in enumerate(queries()):
            print(f"> {sql}")
            args = () if PARAMS[i] is None else (PARAMS[i],)
            stmt = await conn.prepare(sql)
            print("  columns: " + ", ".join(a.name for a in stmt.get_attributes()))
            show(await stmt.fetch(*args))
        print("=== asyncpg, COPY TO STDOUT in CSV")
        out = io.BytesIO()
        status = await conn.copy_from_query(COPY_QUERY, output=out, format="csv", header=True)
        print(f"  {status}")
        print(out.getvalue().decode())
        print("=== asyncpg, a cursor read 7 rows at a time")
        async with conn.transaction():
            cur = await conn.cursor(queries()[1], 5)
            total = 0
            while True:
                rows = await cur.fetch(7)
                if not rows:
                    break
                total += len(rows)
            print(f"  {total} rows")
    finally:
        await conn.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["psycopg"]:
        run_psycopg()
    elif sys.argv[1:] == ["asyncpg"]:
        asyncio.run(run_asyncpg())
    else:
        sys.exit("usage: python_client.py psycopg|asyncpg")
